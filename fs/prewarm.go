package fs

import (
	"context"
	"log/slog"
	"os"
	"path"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// Prewarm: a walk of the backing tree at mount time that hands every
// regular file to the gate, so that first opens find a cached verdict.
//
// The walk reaches the backing tree as the filesystem does: every path is
// resolved beneath the root descriptor with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so neither a symlink nor ".." leads out of the
// backing root, and a file is first opened O_PATH (which opens nothing: a
// FIFO or a device is never opened for reading), checked to be a regular
// file by fstat, and only then opened for reading through that very
// descriptor with O_NOATIME: prewarm changes no access time. A directory
// is listed with O_NOATIME too.

// Prewarmer judges a file before anyone opens it; *cache.Gate is one. It
// runs one file at a time and yields to opens (see cache.Gate.Prewarm).
type Prewarmer interface {
	Prewarm(ctx context.Context, f *os.File, rel string) (cache.PrewarmResult, error)
}

// PrewarmStats count what a prewarm walk did with the entries it found.
type PrewarmStats struct {
	Clean    int // scanned and found clean
	Infected int // scanned and found infected
	Cached   int // already judged (another name of the same file, or opened meanwhile)
	Skipped  int // excluded, empty, over max_size, or not a regular file
	Errors   int // no verdict, or a file or directory that could not be read
	Duration time.Duration
	Stopped  bool // ended early: unmounted or signalled
}

// Prewarm walks the backing tree and hands every regular file to p, one
// at a time, skipping the files that scan.exclude (Options.Exclude)
// excludes. It returns when the walk is over, or soon after ctx is done,
// and logs one line at the start and one at the end with the counts.
// report, when not nil, is called with the result of each entry counted
// (for metrics).
func (m *Mounted) Prewarm(ctx context.Context, p Prewarmer, report func(cache.PrewarmResult)) PrewarmStats {
	root, err := m.dupRoot()
	if err != nil {
		m.log.Info("prewarm not started: the mount is gone", "err", err)
		return PrewarmStats{Stopped: true}
	}
	defer unix.Close(root)
	return prewarm(ctx, root, m.fsys.opts.Exclude, p, report, m.log)
}

// walker is one prewarm walk; it is used by one goroutine.
type walker struct {
	root    int
	exclude func(rel string) bool
	p       Prewarmer
	report  func(cache.PrewarmResult)
	log     *slog.Logger
	stats   PrewarmStats
	seen    map[inoKey]bool // directories listed, against loops of bind mounts
}

// prewarm walks the tree beneath root depth first; see Mounted.Prewarm.
func prewarm(ctx context.Context, root int, exclude func(string) bool, p Prewarmer, report func(cache.PrewarmResult), log *slog.Logger) PrewarmStats {
	if exclude == nil {
		exclude = func(string) bool { return false }
	}
	w := &walker{root: root, exclude: exclude, p: p, report: report, log: log, seen: map[inoKey]bool{}}
	began := time.Now()
	log.Info("prewarm started")
	dirs := []string{""}
	for len(dirs) > 0 && ctx.Err() == nil {
		dir := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		sub := w.dir(ctx, dir)
		for i := len(sub) - 1; i >= 0; i-- {
			dirs = append(dirs, sub[i]) // so that they are walked in listing order
		}
	}
	s := w.stats
	s.Duration = time.Since(began)
	s.Stopped = ctx.Err() != nil
	msg := "prewarm done"
	if s.Stopped {
		msg = "prewarm stopped"
	}
	log.Info(msg, "scanned", s.Clean+s.Infected, "infected", s.Infected, "cached", s.Cached,
		"skipped", s.Skipped, "errors", s.Errors, "duration", s.Duration.Round(time.Millisecond))
	return s
}

// dir handles the entries of the directory rel and returns its
// subdirectories.
func (w *walker) dir(ctx context.Context, rel string) []string {
	fd, err := openBeneath(w.root, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME)
	if err != nil {
		w.failed(rel, err)
		return nil
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		w.failed(rel, err)
		return nil
	}
	id := inoKey{st.Dev, st.Ino}
	if w.seen[id] {
		return nil
	}
	w.seen[id] = true
	ents, err := readDirents(fd)
	if err != nil {
		w.failed(rel, err)
		return nil
	}
	var sub []string
	for _, e := range ents {
		if ctx.Err() != nil {
			return nil
		}
		if e.Name == "." || e.Name == ".." {
			continue
		}
		p := path.Join(rel, e.Name)
		switch e.Type {
		case fuse.DT_Dir:
			sub = append(sub, p)
		case fuse.DT_File, fuse.DT_Unknown:
			if w.file(ctx, p) {
				sub = append(sub, p)
			}
		default: // symlinks, FIFOs, sockets, devices
			w.count(p, cache.PrewarmSkipped, nil)
		}
	}
	return sub
}

// file hands the regular file rel to the gate, and reports whether rel
// turned out to be a directory (the listing did not say).
func (w *walker) file(ctx context.Context, rel string) (isDir bool) {
	pfd, err := openBeneath(w.root, rel, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		w.failed(rel, err)
		return false
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		w.failed(rel, err)
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return true
	case unix.S_IFREG:
	default:
		w.count(rel, cache.PrewarmSkipped, nil)
		return false
	}
	if w.exclude(rel) {
		w.count(rel, cache.PrewarmSkipped, nil)
		return false
	}
	// clamfuse's own open, as root: no caller to act for.
	fd, err := unix.Open(procPath(pfd), unix.O_RDONLY|unix.O_NOATIME|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == nil {
		fd, err = checkRegular(fd, unix.O_RDONLY|unix.O_NOATIME, &inoKey{st.Dev, st.Ino}, nil)
	}
	if err != nil {
		w.failed(rel, err)
		return false
	}
	f := osFile(fd, rel)
	r, err := w.p.Prewarm(ctx, f, rel)
	f.Close()
	if r == cache.PrewarmError && ctx.Err() != nil {
		return false // stopped, not judged
	}
	w.count(rel, r, err)
	return false
}

// failed counts an entry that could not be opened or listed: skipped if
// it went away or changed since it was listed, or if reading it would
// change its access time (O_NOATIME refused: clamfuse neither owns it nor
// runs as root); else an error.
func (w *walker) failed(rel string, err error) {
	switch err {
	case syscall.ENOENT, syscall.ENOTDIR, syscall.ELOOP, syscall.ESTALE:
		w.count(rel, cache.PrewarmSkipped, nil)
	case syscall.EPERM:
		w.log.Debug("prewarm: not read, since that would change its access time", "path", rel)
		w.count(rel, cache.PrewarmSkipped, nil)
	default:
		w.count(rel, cache.PrewarmError, err)
	}
}

func (w *walker) count(rel string, r cache.PrewarmResult, err error) {
	switch r {
	case cache.PrewarmClean:
		w.stats.Clean++
	case cache.PrewarmInfected:
		w.stats.Infected++
	case cache.PrewarmCached:
		w.stats.Cached++
	case cache.PrewarmSkipped:
		w.stats.Skipped++
	default:
		w.stats.Errors++
	}
	if err != nil {
		w.log.Debug("prewarm: file not judged; its first open scans it", "path", rel, "result", r.String(), "err", err)
	}
	if w.report != nil {
		w.report(r)
	}
}
