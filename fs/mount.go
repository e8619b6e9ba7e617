package fs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// ErrBadInput marks errors in what the user asked for (paths), as opposed
// to failures of the system.
var ErrBadInput = errors.New("bad input")

// MountOptions say what to mount where.
type MountOptions struct {
	Source     string // backing directory
	Target     string // mountpoint; may equal Source
	AllowOther bool
	ReadOnly   bool
	FS         Options
	// Passthrough asks the kernel for FUSE passthrough (Linux 6.9 and
	// later; Mounted.Passthrough says whether it was granted) and, when
	// granted, uses it for the opens the gate allowed (passthrough.go).
	Passthrough bool

	// observe, set only by tests, sees every request before it is served.
	observe func(fuse.Request)
}

// Mounted is a live mount being served.
type Mounted struct {
	Target string
	conn   *fuse.Conn
	fsys   *FS
	log    *slog.Logger
	done   chan error

	rootMu sync.Mutex // guards rootFD, closed once serving ends
	rootFD int        // the backing root; -1 once closed
}

// inputError is an error in what the user asked for. It matches
// ErrBadInput with errors.Is, and unwraps to the message alone, which is
// what the command prints.
type inputError struct{ err error }

func (e *inputError) Error() string        { return ErrBadInput.Error() + ": " + e.err.Error() }
func (e *inputError) Unwrap() error        { return e.err }
func (e *inputError) Is(target error) bool { return target == ErrBadInput }

func badInput(format string, args ...any) error {
	return &inputError{fmt.Errorf(format, args...)}
}

// CheckPaths validates source and target and returns them absolute and
// clean. It clears a dead FUSE mount left on target by a killed clamfuse.
func CheckPaths(source, target string, log *slog.Logger) (string, string, error) {
	src, err := checkDir("source", source)
	if err != nil {
		return "", "", err
	}
	dst, err := filepath.Abs(target)
	if err != nil {
		return "", "", badInput("mountpoint %s: %v", target, err)
	}
	if fstype, ok := MountedAt(dst); ok && strings.HasPrefix(fstype, "fuse") {
		switch err := deadFuse(dst); err {
		case syscall.ENOTCONN, syscall.ECONNABORTED:
			if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil {
				return "", "", fmt.Errorf("mountpoint %s: clearing dead FUSE mount: %v", dst, err)
			}
			log.Warn("cleared a dead FUSE mount left on the mountpoint", "target", dst, "fstype", fstype)
		case errNotAnswering:
			return "", "", badInput("mountpoint %s: already a FUSE mount (%s), not answering", dst, fstype)
		default:
			return "", "", badInput("mountpoint %s: already a FUSE mount (%s)", dst, fstype)
		}
	}
	if dst, err = checkDir("mountpoint", dst); err != nil {
		return "", "", err
	}
	if src != dst {
		if within(src, dst) {
			return "", "", badInput("source %s is inside mountpoint %s", src, dst)
		}
		if within(dst, src) {
			return "", "", badInput("mountpoint %s is inside source %s", dst, src)
		}
	}
	return src, dst, nil
}

// errNotAnswering is deadFuse's answer for a mount whose server is alive
// but does not answer.
var errNotAnswering = errors.New("FUSE server not answering")

// deadFuseWait bounds deadFuse: a live server answers statfs at once.
const deadFuseWait = 5 * time.Second

// deadFuse asks the FUSE mount on p for statfs, which the kernel always
// sends to the server: ENOTCONN (or ECONNABORTED) means its server is gone.
// A stat would not tell: the kernel answers it from its attribute cache,
// for up to attr_timeout after the server died (a restart right after a
// crash, as systemd's Restart= does). A server alive but stuck would
// block the statfs: after deadFuseWait it is errNotAnswering (the
// goroutine stays blocked until that server answers or dies).
func deadFuse(p string) error {
	done := make(chan error, 1)
	go func() {
		var s unix.Statfs_t
		done <- unix.Statfs(p, &s)
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(deadFuseWait):
		return errNotAnswering
	}
}

func checkDir(what, p string) (string, error) {
	if p == "" {
		return "", badInput("%s: not set", what)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", badInput("%s %s: %v", what, p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", badInput("%s %s: %v", what, p, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", badInput("%s %s: %v", what, p, err)
	}
	if !fi.IsDir() {
		return "", badInput("%s %s: not a directory", what, p)
	}
	return real, nil
}

// within reports whether p is strictly inside dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// MountedAt returns the filesystem type of the topmost mount whose
// mountpoint is p (absolute and clean), from /proc/self/mountinfo.
func MountedAt(p string) (string, bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	defer f.Close()
	fstype, found := "", false
	eachMount(f, func(fields []string) bool {
		if unescapeMountinfo(fields[4]) != p {
			return true
		}
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) {
				fstype, found = fields[i+1], true
			}
		}
		return true
	})
	return fstype, found
}

// eachMount calls fn with the fields of each line of mountinfo r (id
// parent major:minor root mountpoint options [optional...] - fstype
// source super; lines of fewer than 7 skipped) until fn returns false.
func eachMount(r io.Reader, fn func(fields []string) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 7 && !fn(fields) {
			return nil
		}
	}
	return sc.Err()
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mount opens the backing directory, then mounts over target (which may be
// the same directory) and serves requests until unmounted. Paths must have
// been through CheckPaths.
func Mount(opts MountOptions) (*Mounted, error) {
	log := opts.FS.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Open the backing root first: with an in-place mount the path will
	// name the mount from now on, and all backing access goes through fd.
	rootFD, err := unix.Open(opts.Source, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, badInput("source %s: %v", opts.Source, err)
	}
	fsys, err := New(rootFD, opts.FS)
	if err != nil {
		unix.Close(rootFD)
		return nil, err
	}
	// Entries are created as their callers with the mode newMode gives,
	// the caller's umask applied: clamfuse's own must not narrow it
	// further. Whatever clamfuse creates for itself (quarantine copies
	// and records) it creates with explicit modes.
	unix.Umask(0)
	if ok, why := caller.Switching(); ok {
		log.Info("acting on the backing directory as each caller (fsuid, fsgid, groups)")
	} else if opts.AllowOther && os.Geteuid() == 0 {
		// Every user would act as root on the backing directory.
		unix.Close(rootFD)
		return nil, badInput("allow_other: clamfuse runs as root but cannot act as each caller (%s); it needs CAP_SETUID and CAP_SETGID", why)
	} else {
		log.Warn("cannot act as each caller: every request acts with clamfuse's own credentials", "reason", why)
	}
	mopts := []fuse.MountOption{
		fuse.FSName(opts.Source),
		fuse.Subtype("clamfuse"),
		fuse.DefaultPermissions(),
		fuse.MaxReadahead(readahead),
		fuse.AsyncRead(),
		// A READ or WRITE of up to 1 MiB, not 128 KiB (FUSE_BIG_WRITES
		// is always asked for).
		fuse.RequestInitFlags(fuse.InitMaxPages),
		// The kernel's own permission checks (default_permissions) then
		// read POSIX ACLs through GETXATTR and enforce them, path walks
		// through cached entries included, and grant what an ACL grants;
		// and it leaves the umask to clamfuse (newMode), which must not
		// apply it under a default ACL.
		fuse.RequestInitFlags(fuse.InitPosixACL | fuse.InitDontMask),
		// Names in the backing directory that still lead where they did
		// (after an overflow, every name the kernel may cache) and names
		// that lead to a directory are expired, not dropped, so that
		// nothing mounted on them is detached; names that lead elsewhere
		// now are dropped (see watch.go).
		fuse.RequestInitFlags2(fuse.InitHasExpireOnly),
		// The kernel keeps a symlink's target with its node rather than
		// ask READLINK at every path walk through it: a target never
		// changes but with a new inode, which gets a new node if its
		// target differs (see symlinkDigest), and a name the backing directory points at
		// another symlink is dropped by the watcher.
		fuse.CacheSymlinks(),
	}
	mopts = append(mopts, opts.FS.ReaddirPlus.mountOptions()...)
	if opts.AllowOther {
		mopts = append(mopts, fuse.AllowOther())
	}
	if opts.ReadOnly {
		mopts = append(mopts, fuse.ReadOnly())
	}
	if opts.Source == opts.Target {
		mopts = append(mopts, fuse.AllowNonEmptyMount())
	}
	if opts.Passthrough {
		// Depth 1: backing files on a non-stacking file system (else the
		// kernel refuses them, and clamfuse serves the reads), and room
		// for overlayfs on top of the mount.
		mopts = append(mopts, fuse.Passthrough(1))
	}
	// Opened before the mount (see mountRef); none means no attribute
	// refresh after a store, no more.
	mnt, err := newMountRef(opts.Target)
	if err != nil {
		log.Debug("the mountpoint's parent cannot be kept open: no attribute refresh after a store", "err", err)
	}
	conn, err := fuse.Mount(opts.Target, mopts...)
	if err != nil {
		mnt.close()
		unix.Close(rootFD)
		return nil, fmt.Errorf("mount %s: %v", opts.Target, err)
	}
	if mnt != nil {
		if err := mnt.learn(); err != nil {
			log.Debug("the mount's device is unknown: no attribute refresh after a store", "err", err)
			mnt.close()
			mnt = nil
		}
	}
	// What the kernel granted (fuse.RequestInitFlags asks for more).
	log.Debug("fuse init", "protocol", conn.Protocol().String(), "features", conn.Features().String(),
		"features2", conn.Features2().String(), "max_pages", conn.MaxPages())
	if f := conn.Features(); f&fuse.InitPosixACL != 0 {
		log.Info("the kernel enforces POSIX ACLs on the mount (FUSE_POSIX_ACL granted)", "dont_mask", f&fuse.InitDontMask != 0)
	} else {
		log.Warn("the kernel does not enforce POSIX ACLs on the mount (FUSE_POSIX_ACL not granted): it checks mode bits only; clamfuse's calls as the caller still honour ACLs",
			"dont_mask", f&fuse.InitDontMask != 0)
	}
	// The kernel reads ahead no more than its default (128 KiB) whatever
	// INIT says; as root, raise it so a sequential read takes 1 MiB READs.
	if err := fuse.SetReadahead(opts.Target, readahead); err != nil {
		log.Debug("readahead left at the kernel's default", "err", err)
	}
	m := &Mounted{Target: opts.Target, conn: conn, fsys: fsys, rootFD: rootFD, log: log, done: make(chan error, 1)}
	var cfg *fusefs.Config
	if opts.observe != nil {
		cfg = &fusefs.Config{WithContext: func(ctx context.Context, req fuse.Request) context.Context {
			opts.observe(req)
			return ctx
		}}
	}
	srv := fusefs.New(conn, cfg)
	srv.SetTurns(callerTurns{q: fsys.quota})
	fsys.srv = srv
	fsys.mnt = mnt
	fsys.passthrough = opts.Passthrough && m.Passthrough()
	if opts.Passthrough {
		log.Info("fuse passthrough", "granted", fsys.passthrough)
	}
	fsys.watch = newWatcher(fsys, srv, conn, opts.FS.Invalidation, opts.FS.WatchQueue)
	dev, devErr := deviceAt(unix.AT_FDCWD, opts.Target)
	if devErr != nil {
		log.Debug("the mount's device is unknown: an abort of the mount is taken for an unmount", "err", devErr)
	}
	go func() {
		err := srv.Serve(fsys)
		if devErr == nil {
			err = servingEnded(err, func() bool { return inMountTable(dev) })
		}
		fsys.watch.stop()
		mnt.close()
		conn.Close()
		m.closeRoot()
		m.done <- err
	}()
	return m, nil
}

// readahead is how far the kernel reads ahead on a mount: 1 MiB, the
// most one READ can carry (fuse.InitMaxPages).
const readahead = 1 << 20

func (m *Mounted) closeRoot() {
	m.rootMu.Lock()
	defer m.rootMu.Unlock()
	unix.Close(m.rootFD)
	m.rootFD = -1
}

// dupRoot returns a descriptor of the backing root that the caller owns,
// for work beside the mount (Prewarm); it fails once serving has ended.
func (m *Mounted) dupRoot() (int, error) {
	m.rootMu.Lock()
	defer m.rootMu.Unlock()
	if m.rootFD < 0 {
		return -1, syscall.EBADF
	}
	return unix.FcntlInt(uintptr(m.rootFD), unix.F_DUPFD_CLOEXEC, 0)
}

// Watching reports whether changes made directly in the backing directory
// are watched and passed on to the kernel (Options.Invalidation).
func (m *Mounted) Watching() bool { return m.fsys.watch.watching() }

// Passthrough reports whether the kernel granted FUSE passthrough.
func (m *Mounted) Passthrough() bool {
	return m.conn.Features2()&fuse.InitPassthrough != 0
}

// Done yields the result of serving once the mount is gone.
func (m *Mounted) Done() <-chan error { return m.done }

// Unmount detaches the mount: a normal unmount, and if files are still
// open, a lazy one (the mount disappears from the namespace at once and
// the connection ends when clamfuse exits).
func (m *Mounted) Unmount() error {
	err := unix.Unmount(m.Target, 0)
	if err == nil || err == syscall.EINVAL {
		return nil
	}
	if err == syscall.EBUSY {
		m.log.Warn("mount busy, detaching lazily", "target", m.Target)
		if err := unix.Unmount(m.Target, unix.MNT_DETACH); err != nil && err != syscall.EINVAL {
			return fmt.Errorf("unmount %s: %v", m.Target, err)
		}
		return nil
	}
	if err == syscall.EPERM {
		// Not root: fusermount3 can unmount our own mount.
		return fuse.Unmount(m.Target)
	}
	return fmt.Errorf("unmount %s: %v", m.Target, err)
}

// Wait waits up to d for serving to end after Unmount.
func (m *Mounted) Wait(d time.Duration) error {
	select {
	case err := <-m.done:
		return err
	case <-time.After(d):
		return fmt.Errorf("unmount %s: still serving after %v", m.Target, d)
	}
}

// IsFuseMount reports whether p is the mountpoint of a FUSE mount.
func IsFuseMount(p string) bool {
	fstype, ok := MountedAt(p)
	return ok && strings.HasPrefix(fstype, "fuse")
}
