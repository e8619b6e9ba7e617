// Package fs is the FUSE adapter of clamfuse: it translates FUSE requests
// into calls on the backing directory and asks the gate (package cache)
// before any open that can read. It holds no scanning policy of its own.
package fs

import (
	"context"
	"hash/maphash"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Gate decides opens; *cache.Gate is one.
type Gate interface {
	Check(ctx context.Context, f *os.File, who cache.Opener) cache.Decision
	// CheckUncached is Check for a file another process has open for
	// writing through the mount: decided by a scan, never from the cache.
	CheckUncached(ctx context.Context, f *os.File, who cache.Opener) cache.Decision
	// Prescan judges a file just written through the mount, in the
	// background, when its last writer closes it; when its turn must
	// wait, the gate opens it again later through again (the FS).
	Prescan(f *os.File, who cache.Opener, again cache.Reopener)
	// Modified says that the backing file dev, ino was changed through
	// the mount; it is called after every change has reached the file.
	Modified(dev, ino uint64)
	// SetTimeGranularity says in what steps the backing filesystem of
	// device dev stores file times (timegran.go).
	SetTimeGranularity(dev uint64, gran time.Duration)
	// KeepVerdict is called before a change of the metadata alone of a
	// regular file in state st (rename, link, unlink of one of several
	// names, chmod, chown, utimes), done once
	// the change is made or failed: the gate may carry the file's verdict
	// over to the state after it, on a descriptor of its own for reading
	// that open returns (keepverdict.go).
	KeepVerdict(st *unix.Stat_t, open func() (*os.File, error)) (done func())
}

// Actions act on an open denied because the file is infected, given the
// backing directory descriptor and the name of the file in it (valid
// until the call returns), or allowed in audit mode (cache.
// ReasonAuditInfected; then without them: -1, ""); *actions.Runner is
// one.
type Actions interface {
	Infected(d cache.Decision, who cache.Opener, dirfd int, name string)
}

// Options configure the filesystem.
type Options struct {
	Gate    Gate
	Actions Actions               // optional
	Exclude func(rel string) bool // paths never scanned
	// DenyWhileWritten, when it reports true (scan.while_written =
	// "deny"), makes reading and writing through the mount by different
	// processes exclude each other; else an open for reading while
	// another process writes is decided by a fresh scan (writers.go).
	DenyWhileWritten func() bool
	ReadOnly         bool
	AttrValid        time.Duration // kernel attribute cache (0: none)
	EntryValid       time.Duration // kernel dentry cache (0: none)
	Logger           *slog.Logger
	// Limits bound the descriptors held for callers (quota.go); the
	// zero value derives them from the current RLIMIT_NOFILE.
	Limits Limits

	// Invalidation watches the backing filesystem (fanotify, see
	// watch.go) and tells the kernel of every change made there; names
	// and attributes on a filesystem so watched are then trusted for
	// WatchedValid instead of AttrValid and EntryValid.
	Invalidation bool
	WatchedValid time.Duration
	// WatchQueue bounds the invalidations pending at once (0 for the
	// default); more, and everything is invalidated. For tests.
	WatchQueue int

	// ReaddirPlus is when the kernel is asked for READDIRPLUS
	// (readdirplus.go).
	ReaddirPlus ReaddirPlus
}

type inoKey struct{ dev, ino uint64 }

// groupsTTL is how long a caller's supplementary groups are taken from
// /proc/PID/status before it is read again (see caller.Cache).
const groupsTTL = time.Second

// FS mirrors the directory open at root.
//
// Lock order: FS.treeMu, then Node.hmu.
type FS struct {
	root int // O_RDONLY|O_DIRECTORY descriptor of the backing root
	opts Options
	log  *slog.Logger
	ids  *caller.Cache // callers' supplementary groups

	orphanMu sync.Mutex         // guards orphans; taken after Node.hmu
	orphans  map[*Node]struct{} // nodes keeping an orphan descriptor, at most opts.Limits.Orphans
	// removing is read-locked by an unlink or a rename over a name from
	// before it removes the backing name until the file it removed keeps
	// its orphan descriptor (keepOrphan); a request about a node whose
	// names are all gone waits for those in flight before it looks for
	// that descriptor (Node.keptOrphanFD), holding no other lock. Taken
	// before Node.hmu, treeMu and orphanMu.
	removing sync.RWMutex
	// Set by tests: removed runs in an unlink or a rename over a name
	// once the backing name is gone, before keepOrphan; orphanWait in an
	// open that found its file's names gone, before it waits (removing).
	removed, orphanWait atomic.Pointer[func()]

	dirs  *dirCache    // the directory descriptors nodes keep (dirfd.go)
	quota *quota       // descriptors held for each user's open handles (quota.go)
	kept  atomic.Int64 // bytes of READDIR replies directory handles keep (readdir.go)

	srv *fusefs.Server // set by Mount before serving; for the inode invalidations of flushWriters
	// passthrough: the kernel granted FUSE passthrough and it was asked
	// for; set by Mount before serving (passthrough.go).
	passthrough bool
	ptRefused   sync.Map      // error text -> true: reasons the kernel refused a backing file, logged once
	devices     sync.Map      // uint64 device -> true: timestamp granularity found (timegran.go)
	unpinned    unpinned      // devices whose inodes descriptors do not pin (deaddir.go)
	stocking    chan struct{} // a slot for each store of judged contents running (stock.go)
	holding     chan struct{} // a slot for each buffer of an open's judged contents (Handle.Hold)
	mnt         *mountRef     // finds the mount's root again; set by Mount before serving, nil for none (stock.go)
	stocked     atomic.Uint64 // stores of judged contents made and their attributes refreshed (stock.go)

	treeMu    sync.Mutex          // guards nodes, moreLinks, setAside, setAsideAt and every Node.links
	moreLinks map[*linkSet][]link // the names of a node past its first (see linkSet)
	nodes     nodeTable           // live nodes by backing identity (nodetable.go)
	rootN     *Node
	// setAside holds the names past the first of nodes forget took out
	// of the table, until revive gives them back (see forget); keyed
	// weakly, so that it keeps no node alive, and pruned of nodes gone
	// when it reaches setAsideAt entries.
	setAside   map[weak.Pointer[Node]][]link
	setAsideAt int

	watch *watcher // set by Mount before serving; nil methods do nothing
	trim  *trimmer // gives memory back after many forgets (trim.go)
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
	if opts.Limits == (Limits{}) {
		opts.Limits = currentLimits()
	}
	var st unix.Stat_t
	if err := unix.Fstat(rootFD, &st); err != nil {
		return nil, err
	}
	f := &FS{root: rootFD, opts: opts, log: opts.Logger, ids: caller.NewCache(groupsTTL), nodes: newNodeTable(), trim: newTrimmer(),
		stocking: make(chan struct{}, stockMax), holding: make(chan struct{}, holdMax)}
	f.dirs = newDirCache(opts.Limits.DirFDs)
	f.quota = newQuota(opts.Limits, opts.Logger)
	f.rootN = &Node{fsys: f, id: inoKey{st.Dev, st.Ino}, typ: unix.S_IFDIR}
	if opts.Gate != nil {
		f.learnDevice(rootFD, st.Dev)
	}
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
	var target uint64
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		target = symlinkDigest(dirfd, name, st)
	}
	f.dropDeadDir(dirfd, st, parent)
	n := f.linkNode(st, target, parent, name)
	if n.typ == unix.S_IFDIR {
		f.watch.register(n, dirfd, name)
	}
	return n
}

// linkNode is node without the watcher; target is a symlink's
// symlinkDigest.
func (f *FS) linkNode(st *unix.Stat_t, target uint64, parent *Node, name string) *Node {
	k := inoKey{st.Dev, st.Ino}
	typ := st.Mode & unix.S_IFMT
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	if k == f.rootN.id {
		return f.rootN
	}
	n := f.nodes.get(k)
	if n == nil || uint32(n.typ) != typ || (typ == unix.S_IFLNK && (target == 0 || n.keep != target)) {
		// New, or the inode number now names an entry of another type,
		// or another symlink: the kernel must see a new node.
		n = &Node{fsys: f, id: k, typ: uint16(typ), keep: target}
		f.nodes.set(n)
	}
	if typ == unix.S_IFDIR {
		// A directory has exactly one name.
		n.links.reset()
	}
	n.links.add(link{parent, name})
	return n
}

// symlinkDigest stands for the target of the symlink st, name in dirfd:
// the kernel caches a symlink's target (FUSE_CACHE_SYMLINKS, see Mount)
// with its node, and a target never changes but with a new inode, whose
// number may be that of one just removed (ext4 and tmpfs reuse them at
// once): a node whose digest differs is replaced by a new one. The
// target is read through a descriptor of the very inode st (0 if that
// fails: a new node, which costs one READLINK). Never 0 otherwise. The
// hash's seed is random and never leaves the process.
func symlinkDigest(dirfd int, name string, st *unix.Stat_t) uint64 {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var got unix.Stat_t
	if unix.Fstat(fd, &got) != nil || got.Dev != st.Dev || got.Ino != st.Ino {
		return 0
	}
	buf := make([]byte, unix.PathMax)
	k, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return 0
	}
	return maphash.Bytes(digestSeed, buf[:k]) | 1
}

// unnamedNode returns the node for the backing inode st, which has no
// name (O_TMPFILE, tmpfile.go), creating it if needed.
func (f *FS) unnamedNode(st *unix.Stat_t) *Node {
	k := inoKey{st.Dev, st.Ino}
	typ := st.Mode & unix.S_IFMT
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	n := f.nodes.get(k)
	if n == nil || uint32(n.typ) != typ {
		n = &Node{fsys: f, id: k, typ: uint16(typ)}
		f.nodes.set(n)
	}
	return n
}

// lookupID returns the live node for a backing identity, if any.
func (f *FS) lookupID(st *unix.Stat_t) *Node {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	return f.nodes.get(inoKey{st.Dev, st.Ino})
}

// forget drops n from the table, unless the server has handed it out
// again meanwhile (it has a NodeID: SetServeID), and reports whether it
// did.
func (f *FS) forget(n *Node) bool {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	if n.serveID.Load() != 0 {
		return false
	}
	f.nodes.delete(n)
	// The kernel forgets no node an operation still uses, but keep the
	// first name for one that might; the others would keep the node
	// itself alive, in moreLinks. They are set aside, weakly: a LOOKUP
	// racing this FORGET may have given the kernel the node under one
	// of them, and hand the node out again (revive); without that name
	// the watcher, whose invalidation of everything goes by the names
	// of the tree, would not reach the kernel's entry.
	if more := f.moreLinks[&n.links]; len(more) > 0 {
		if f.setAside == nil {
			f.setAside = map[weak.Pointer[Node]][]link{}
		}
		f.setAside[weak.Make(n)] = more
		if len(f.setAside) >= max(f.setAsideAt, 64) {
			for wp := range f.setAside {
				if wp.Value() == nil {
					delete(f.setAside, wp)
				}
			}
			f.setAsideAt = 2 * len(f.setAside)
		}
	}
	delete(f.moreLinks, &n.links)
	return true
}

// revive puts n, just handed to the kernel, back into the table if a
// Forget took it out and no other node has its identity since, with the
// names forget set aside.
func (f *FS) revive(n *Node) {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	if f.nodes.get(n.id) == nil {
		f.nodes.set(n)
		wp := weak.Make(n)
		for _, l := range f.setAside[wp] {
			n.links.add(l)
		}
		delete(f.setAside, wp)
		f.log.Debug("a node the kernel forgot was handed out again: back in the table", "ino", n.id.ino)
	}
}

// cred is who the request hdr acts for: its caller, with the caller's
// supplementary groups.
func (f *FS) cred(hdr *fuse.Header) caller.Cred {
	return f.ids.Cred(hdr.Pid, hdr.Uid, hdr.Gid)
}

// newMode is the mode for an entry the caller creates in dirfd with mode
// and umask: clamfuse's own umask is 0 while it serves (see Mount), so
// the caller's applies here, as on a local filesystem: unless the
// directory has a default ACL, which then decides in its place (the
// backing filesystem applies it). The kernel may have applied the umask
// already (it does unless FUSE_DONT_MASK is negotiated, see Mount);
// applying it twice changes nothing.
func newMode(dirfd int, mode, umask uint32) uint32 {
	if mode&^umask == mode || hasDefaultACL(dirfd) {
		return mode
	}
	return mode &^ umask
}

// hasDefaultACL reports whether the directory dirfd has a default ACL.
func hasDefaultACL(dirfd int) bool {
	k, err := unix.Getxattr(procPath(dirfd), aclDefault, nil)
	return err == nil && k > 0
}

func ignoreEINTR(err error) error {
	if err == syscall.EINTR {
		return nil
	}
	return err
}

// addOrphan records that n keeps an orphan descriptor, and reports
// whether it may: at most Limits.Orphans are kept at once.
func (f *FS) addOrphan(n *Node) bool {
	f.orphanMu.Lock()
	defer f.orphanMu.Unlock()
	if len(f.orphans) >= f.opts.Limits.Orphans {
		return false
	}
	if f.orphans == nil {
		f.orphans = map[*Node]struct{}{}
	}
	f.orphans[n] = struct{}{}
	return true
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
