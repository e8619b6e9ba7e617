// Package fs is the FUSE adapter of clamfuse: it translates FUSE requests
// into calls on the backing directory and asks the gate (package cache)
// before any open that can read. It holds no scanning policy of its own.
package fs

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Gate decides opens; *cache.Gate is one.
type Gate interface {
	Check(ctx context.Context, f *os.File, who cache.Opener) cache.Decision
	// Prescan judges a file just written through the mount, in the
	// background, when its last writer closes it.
	Prescan(f *os.File, who cache.Opener)
	// Modified says that the backing file dev, ino is being written to
	// through the mount, which cancels its background scan.
	Modified(dev, ino uint64)
}

// Actions act on an open denied because the file is infected, given the
// backing directory descriptor and the name of the file in it (valid
// until the call returns); *actions.Runner is one.
type Actions interface {
	Infected(d cache.Decision, who cache.Opener, dirfd int, name string)
}

// Options configure the filesystem.
type Options struct {
	Gate       Gate
	Actions    Actions               // optional
	Exclude    func(rel string) bool // paths never scanned
	ReadOnly   bool
	AttrValid  time.Duration // kernel attribute cache (0: none)
	EntryValid time.Duration // kernel dentry cache (0: none)
	Logger     *slog.Logger

	// Invalidation watches the backing filesystem (fanotify, see
	// watch.go) and tells the kernel of every change made there; names
	// and attributes on a filesystem so watched are then trusted for
	// WatchedValid instead of AttrValid and EntryValid.
	Invalidation bool
	WatchedValid time.Duration
	// WatchQueue bounds the invalidations pending at once (0 for the
	// default); more, and everything is invalidated. For tests.
	WatchQueue int

	// passthroughReads, set only by tests, passes read-only opens the
	// gate allowed through to the kernel (see passthrough.go).
	passthroughReads bool
}

type inoKey struct{ dev, ino uint64 }

// FS mirrors the directory open at root.
//
// Lock order: FS.treeMu, then Node.hmu.
type FS struct {
	root  int // O_RDONLY|O_DIRECTORY descriptor of the backing root
	opts  Options
	log   *slog.Logger
	chown bool // running as root: give new entries to the caller

	orphanMu sync.Mutex         // guards orphans; taken after Node.fdMu
	orphans  map[*Node]struct{} // nodes keeping an orphan descriptor

	treeMu sync.Mutex       // guards nodes and every Node.links
	nodes  map[inoKey]*Node // live nodes by backing identity
	rootN  *Node

	watch *watcher // set by Mount before serving; nil methods do nothing
}

var (
	_ fusefs.FS         = (*FS)(nil)
	_ fusefs.FSStatfser = (*FS)(nil)
)

// New returns a filesystem serving the directory open at rootFD, which it
// does not close.
func New(rootFD int, opts Options) (*FS, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Exclude == nil {
		opts.Exclude = func(string) bool { return false }
	}
	var st unix.Stat_t
	if err := unix.Fstat(rootFD, &st); err != nil {
		return nil, err
	}
	f := &FS{root: rootFD, opts: opts, log: opts.Logger, chown: os.Geteuid() == 0, nodes: map[inoKey]*Node{}}
	f.rootN = &Node{fsys: f, id: inoKey{st.Dev, st.Ino}, typ: unix.S_IFDIR}
	return f, nil
}

// Root is the backing root.
func (f *FS) Root() (fusefs.Node, error) { return f.rootN, nil }

// Statfs reports the backing filesystem.
func (f *FS) Statfs(ctx context.Context, req *fuse.StatfsRequest, resp *fuse.StatfsResponse) error {
	var s unix.Statfs_t
	if err := unix.Fstatfs(f.root, &s); err != nil {
		return errno(err)
	}
	resp.Blocks = s.Blocks
	resp.Bfree = s.Bfree
	resp.Bavail = s.Bavail
	resp.Files = s.Files
	resp.Ffree = s.Ffree
	resp.Bsize = uint32(s.Bsize)
	resp.Namelen = uint32(s.Namelen)
	resp.Frsize = uint32(s.Frsize)
	return nil
}

// node returns the node for the backing inode st, found as name in the
// directory parent open at dirfd, creating it if needed, and records that
// link. A directory is registered with the watcher before the kernel can
// cache anything of it (see watch.go).
func (f *FS) node(dirfd int, st *unix.Stat_t, parent *Node, name string) *Node {
	n := f.linkNode(st, parent, name)
	if n.typ == unix.S_IFDIR {
		f.watch.register(n, dirfd, name)
	}
	return n
}

func (f *FS) linkNode(st *unix.Stat_t, parent *Node, name string) *Node {
	k := inoKey{st.Dev, st.Ino}
	typ := st.Mode & unix.S_IFMT
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	if k == f.rootN.id {
		return f.rootN
	}
	n, ok := f.nodes[k]
	if !ok || n.typ != typ {
		// New, or the inode number now names an entry of another type:
		// the kernel must see a new node.
		n = &Node{fsys: f, id: k, typ: typ}
		f.nodes[k] = n
	}
	if typ == unix.S_IFDIR {
		// A directory has exactly one name.
		n.links.reset()
	}
	n.links.add(link{parent, name})
	return n
}

// lookupID returns the live node for a backing identity, if any.
func (f *FS) lookupID(st *unix.Stat_t) *Node {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	return f.nodes[inoKey{st.Dev, st.Ino}]
}

func (f *FS) forget(n *Node) {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	if f.nodes[n.id] == n {
		delete(f.nodes, n.id)
	}
}

// setID are the mode bits a new entry gets only once it belongs to its
// caller (ownNew), never while root owns it.
const setID = unix.S_ISUID | unix.S_ISGID

// keepMode tells ownNew to leave the mode alone (symlinks have none).
const keepMode = ^uint32(0)

// ownNew gives an entry just created as name in dir to the caller, as the
// kernel would for a local filesystem: uid of the caller, gid of the
// caller unless the directory is set-group-ID. Then it sets mode, the
// permission bits the kernel asked for (already under the caller's
// umask): clamfuse's own umask may have narrowed them, and a chown by
// root clears the set-ID bits. A directory keeps the set-group-ID bit it
// inherits from its parent.
func (f *FS) ownNew(dirfd int, name string, hdr *fuse.Header, mode uint32) error {
	if f.chown && (hdr.Uid != 0 || hdr.Gid != 0) {
		gid := int(hdr.Gid)
		var dst unix.Stat_t
		if err := unix.Fstat(dirfd, &dst); err == nil && dst.Mode&unix.S_ISGID != 0 {
			gid = -1
		}
		if err := unix.Fchownat(dirfd, name, int(hdr.Uid), gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if mode == keepMode {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		mode |= st.Mode & unix.S_ISGID
	}
	if st.Mode&0o7777 == mode {
		return nil
	}
	return chmodAt(dirfd, name, mode)
}

func ignoreEINTR(err error) error {
	if err == syscall.EINTR {
		return nil
	}
	return err
}

func (f *FS) addOrphan(n *Node) {
	f.orphanMu.Lock()
	defer f.orphanMu.Unlock()
	if f.orphans == nil {
		f.orphans = map[*Node]struct{}{}
	}
	f.orphans[n] = struct{}{}
}

func (f *FS) removeOrphan(n *Node) {
	f.orphanMu.Lock()
	defer f.orphanMu.Unlock()
	delete(f.orphans, n)
}

// releaseOrphans closes every orphan descriptor, freeing the space of
// files deleted through the mount a moment ago, and reports whether there
// was any.
func (f *FS) releaseOrphans() bool {
	f.orphanMu.Lock()
	nodes := make([]*Node, 0, len(f.orphans))
	for n := range f.orphans {
		nodes = append(nodes, n)
	}
	f.orphanMu.Unlock()
	released := false
	for _, n := range nodes {
		if n.dropOrphan(-1) {
			released = true
		}
	}
	return released
}

// retryFull runs op, and once more after releasing orphan descriptors if
// it ran out of space: a file just deleted through the mount must not
// keep the space a writer needs.
func (f *FS) retryFull(op func() error) error {
	err := op()
	if (err == syscall.ENOSPC || err == syscall.EDQUOT) && f.releaseOrphans() {
		err = op()
	}
	return err
}
