package fs

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
)

// fakePrewarmer records what the walk hands it, and judges a file by its
// name: "*.bad" infected, a second name of a file already seen cached.
type fakePrewarmer struct {
	t      *testing.T
	files  []string
	seen   map[inoKey]bool
	onCall func(n int) // after call n (from 1)
}

func (p *fakePrewarmer) Prewarm(ctx context.Context, f *os.File, rel string) (cache.PrewarmResult, error) {
	p.files = append(p.files, rel)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		p.t.Errorf("%s: fstat: %v", rel, err)
		return cache.PrewarmError, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		p.t.Errorf("%s: handed a file of mode %#o", rel, st.Mode)
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE != unix.O_RDONLY || fl&unix.O_NOATIME == 0 || fl&unix.O_NONBLOCK != 0 {
		p.t.Errorf("%s: flags %#o, %v; want O_RDONLY|O_NOATIME, blocking", rel, fl, err)
	}
	// Read it, as a scan would.
	if _, err := f.ReadAt(make([]byte, 1), 0); err != nil && st.Size > 0 {
		p.t.Errorf("%s: read: %v", rel, err)
	}
	if p.onCall != nil {
		p.onCall(len(p.files))
	}
	id := inoKey{st.Dev, st.Ino}
	switch {
	case p.seen[id]:
		return cache.PrewarmCached, nil
	case st.Size == 0:
		return cache.PrewarmSkipped, nil
	}
	p.seen[id] = true
	if filepath.Ext(rel) == ".bad" {
		return cache.PrewarmInfected, nil
	}
	return cache.PrewarmClean, nil
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// prewarmTree builds, in a fresh directory: root/ with files at several
// depths, an empty file, an excluded file, a hard link, symlinks inside
// and out, a FIFO and a socket; outside/ with what the symlinks point at.
// Every access time is set far in the past. It returns root, outside and
// every path under them.
func prewarmTree(t *testing.T) (root, outside string, paths []string) {
	dir := t.TempDir()
	root, outside = filepath.Join(dir, "root"), filepath.Join(dir, "outside")
	for _, d := range []string{root, outside, root + "/a", root + "/a/b", root + "/a/b/c", root + "/d"} {
		mustDo(t, os.Mkdir(d, 0o755))
	}
	for name, content := range map[string]string{
		"top.txt": "top", "a/one.txt": "one", "a/b/two.bad": "two", "a/b/c/three.txt": "three",
		"d/empty": "", "d/skip.me": "excluded",
	} {
		mustDo(t, os.WriteFile(filepath.Join(root, name), []byte(content), 0o644))
	}
	mustDo(t, os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("outside"), 0o644))
	mustDo(t, os.Link(filepath.Join(root, "a/one.txt"), filepath.Join(root, "d/one-again.txt")))
	mustDo(t, os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(root, "abs-link.txt")))
	mustDo(t, os.Symlink("../../outside", filepath.Join(root, "a/rel-link")))
	mustDo(t, os.Symlink("one.txt", filepath.Join(root, "a/inside-link.txt")))
	mustDo(t, unix.Mkfifo(filepath.Join(root, "d/fifo"), 0o644))
	mustDo(t, unix.Mknod(filepath.Join(root, "d/sock"), unix.S_IFSOCK|0o644, 0))
	// Set the access times once every directory has been listed: listing
	// one (as filepath.Walk does) sets its access time.
	for _, top := range []string{root, outside} {
		mustDo(t, filepath.Walk(top, func(p string, fi os.FileInfo, err error) error {
			paths = append(paths, p)
			return err
		}))
	}
	old := unix.NsecToTimespec(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	for _, p := range paths {
		mustDo(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{old, {Nsec: unix.UTIME_OMIT}}, unix.AT_SYMLINK_NOFOLLOW))
	}
	return root, outside, paths
}

// atimes maps each of paths to its access time.
func atimes(t *testing.T, paths []string) map[string]int64 {
	out := map[string]int64{}
	for _, p := range paths {
		var st unix.Stat_t
		mustDo(t, unix.Lstat(p, &st))
		out[p] = st.Atim.Nano()
	}
	return out
}

// The walk hands every regular file beneath the root, and only those, to
// the gate, read-only and without touching access times; it follows no
// symlink, opens no FIFO, skips what is excluded, and counts it all.
func TestPrewarmWalk(t *testing.T) {
	root, _, paths := prewarmTree(t)
	before := atimes(t, paths)
	rootFD, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	mustDo(t, err)
	defer unix.Close(rootFD)

	p := &fakePrewarmer{t: t, seen: map[inoKey]bool{}}
	var reported []cache.PrewarmResult
	exclude := func(rel string) bool { return filepath.Base(rel) == "skip.me" }
	done := make(chan PrewarmStats, 1)
	go func() {
		done <- prewarm(t.Context(), rootFD, exclude, p, func(r cache.PrewarmResult) { reported = append(reported, r) }, slog.New(slog.DiscardHandler))
	}()
	var st PrewarmStats
	select {
	case st = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the walk did not end (blocked on the FIFO?)")
	}

	slices.Sort(p.files)
	want := []string{"a/b/c/three.txt", "a/b/two.bad", "a/one.txt", "d/empty", "d/one-again.txt", "top.txt"}
	if !slices.Equal(p.files, want) {
		t.Errorf("files handed to the gate: %q; want %q", p.files, want)
	}
	// skipped: d/skip.me (excluded), d/empty (gate), abs-link.txt,
	// a/rel-link, a/inside-link.txt, d/fifo, d/sock.
	wantSt := PrewarmStats{Clean: 3, Infected: 1, Cached: 1, Skipped: 7}
	st.Duration = 0
	if st != wantSt {
		t.Errorf("stats %+v; want %+v", st, wantSt)
	}
	if len(reported) != 12 {
		t.Errorf("reported %d results; want 12", len(reported))
	}
	after := atimes(t, paths)
	for path, at := range before {
		if after[path] != at {
			t.Errorf("%s: access time changed from %v to %v", path, time.Unix(0, at), time.Unix(0, after[path]))
		}
	}
}

// The walk stops soon after its context is done, and says so.
func TestPrewarmWalkStopped(t *testing.T) {
	root, _, _ := prewarmTree(t)
	rootFD, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	mustDo(t, err)
	defer unix.Close(rootFD)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := &fakePrewarmer{t: t, seen: map[inoKey]bool{}, onCall: func(n int) {
		if n == 2 {
			cancel()
		}
	}}
	st := prewarm(ctx, rootFD, nil, p, nil, slog.New(slog.DiscardHandler))
	if !st.Stopped || len(p.files) != 2 {
		t.Errorf("stats %+v after %d files; want stopped after 2", st, len(p.files))
	}
}
