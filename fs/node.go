package fs

import (
	"bytes"
	"context"
	"iter"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// link is one name of a node: name in the directory parent.
type link struct {
	parent *Node
	name   string
}

// linkSet is the names of a node: almost always one, which it holds
// itself; the others (hard links) are in the FS's moreLinks, so that a
// node with one name costs no allocation for it (issue #12). The zero
// value is no name. Guarded by FS.treeMu, as moreLinks is.
type linkSet struct {
	first link // parent nil for none; set whenever there is a name
}

// fsOf is the FS of s's names, nil if s has none.
func (s *linkSet) fsOf() *FS {
	if s.first.parent == nil {
		return nil
	}
	return s.first.parent.fsys
}

// len is the number of names.
func (s *linkSet) len() int {
	f := s.fsOf()
	if f == nil {
		return 0
	}
	return 1 + len(f.moreLinks[s])
}

func (s *linkSet) add(l link) {
	if s.first.parent == nil {
		s.first = l
		return
	}
	if s.first == l {
		return
	}
	f := s.fsOf()
	more := f.moreLinks[s]
	for _, x := range more {
		if x == l {
			return
		}
	}
	if f.moreLinks == nil {
		f.moreLinks = map[*linkSet][]link{}
	}
	f.moreLinks[s] = append(more, l)
}

func (s *linkSet) remove(l link) {
	f := s.fsOf()
	if f == nil {
		return
	}
	more := f.moreLinks[s]
	i := -1
	if s.first != l {
		for j, x := range more {
			if x == l {
				i = j
				break
			}
		}
		if i < 0 {
			return
		}
	}
	last := len(more) - 1
	if last < 0 {
		s.first = link{} // l was the only name
		return
	}
	if i < 0 {
		s.first = more[last] // l was the first
	} else {
		more[i] = more[last]
	}
	more[last] = link{} // drop the parent pointer
	if last == 0 {
		delete(f.moreLinks, s)
	} else {
		f.moreLinks[s] = more[:last]
	}
}

// reset forgets every name.
func (s *linkSet) reset() {
	if f := s.fsOf(); f != nil {
		delete(f.moreLinks, s)
	}
	s.first = link{}
}

// all yields every name, the first first.
func (s *linkSet) all() iter.Seq[link] {
	return func(yield func(link) bool) {
		f := s.fsOf()
		if f == nil || !yield(s.first) {
			return
		}
		for _, l := range f.moreLinks[s] {
			if !yield(l) {
				return
			}
		}
	}
}

// slice is a copy of every name.
func (s *linkSet) slice() []link {
	var out []link
	for l := range s.all() {
		out = append(out, l)
	}
	return out
}

// Node is one backing inode (file, directory, symlink or special file) as
// the kernel knows it. It holds no descriptor: each operation resolves one
// of the node's names beneath the root and checks the inode it finds.
//
// A Node is what every inode the kernel caches costs (issue #12), so it
// holds only what a node no one has open needs: identity, type, first
// name, the kept page-cache state and the kernel's NodeID, in an 80-byte
// allocation (TestNodeSize). What only an open file or a directory in use
// needs (handles, counts, descriptors) is in a nodeState, allocated with
// the first handle and freed with the last (see nodeState).
//
// Lock order: FS.treeMu, then Node.hmu. A directory's nodeState.fdMu is
// never taken while treeMu or hmu is held; it is read-held while an
// operation uses the directory's descriptor, and taken for writing before
// hmu and before dirCache.mu (see dirfd.go for why pathFD only ever
// TryLocks it for writing).
type Node struct {
	fsys  *FS
	id    inoKey
	links linkSet // guarded by fsys.treeMu; empty for the root
	keep  uint64  // guarded by hmu; a file's: stateDigest of the state the kernel's page cache holds, 0 for none (see keepCache); a symlink's: symlinkDigest of its target, set when the node is made and never changed

	// st is the state of an open file or of a directory in use, nil for
	// none. It is stored (made or dropped) with hmu held, and read
	// without a lock only for a directory, whose state once made stays
	// until the node is gone (its fdMu guards a descriptor that may be in
	// use); a regular file's lives while it has handles, handles counted
	// in reading, or an orphan descriptor (releaseStateLocked), and is
	// read with hmu held.
	st  atomic.Pointer[nodeState]
	hmu sync.Mutex // guards st (see there), keep, forgotten, and nodeState's fields but a directory's descriptor

	serveID   atomic.Uint32 // the kernel's NodeID, 0 for none; written under the FUSE server's lock (see ServeID), read by Forget too
	typ       uint16        // S_IFMT bits
	forgotten bool          // the kernel forgot the node; guarded by hmu
	paged     bool          // the kernel's page cache of the node may hold bytes: it had a handle, or bytes were stored (storeLocked); guarded by hmu
}

// nodeState is what a node needs only while a file is open or a
// directory's descriptor is cached: a node the kernel keeps but no one
// has open costs none (issue #12, TestNodeStateFreed).
type nodeState struct {
	// A directory's descriptor (dirfd.go).
	fdMu  sync.RWMutex // guards fd and hasFD; read-held while fd is in use
	fd    int32        // O_PATH descriptor of a directory node, when hasFD
	slot  int32        // 1 + fd's slot in fsys.dirs, 0 for none; guarded by fsys.dirs.mu
	hasFD bool

	// A regular file's, guarded by Node.hmu.
	hasOrphan bool
	unscanned bool      // a writer that wrote was released while other writers were open (see dropHandle)
	orphan    int32     // O_PATH descriptor of a file that lost its last name through the mount, when hasOrphan (see keepOrphan)
	writers   int32     // open handles that can write
	reading   int32     // handles whose bytes served are not checked yet (served.go)
	handles   handleSet // open file handles, for fstat and fsync
}

// handleSet is the open handles of a file: almost always one, which it
// holds itself; a map only for the others, so that an open of a file
// nobody else has open makes no map (issue #12: two allocations of every
// cached open). The zero value is empty. Guarded by Node.hmu.
type handleSet struct {
	one  *Handle              // nil only when the set is empty
	more map[*Handle]struct{} // the others; nil for none
}

func (s *handleSet) add(h *Handle) {
	if s.one == nil {
		s.one = h
		return
	}
	if s.more == nil {
		s.more = map[*Handle]struct{}{}
	}
	s.more[h] = struct{}{}
}

func (s *handleSet) remove(h *Handle) {
	if s.one == h {
		s.one = nil
		for o := range s.more {
			s.one = o
			delete(s.more, o)
			break
		}
	} else {
		delete(s.more, h)
	}
	if len(s.more) == 0 {
		s.more = nil
	}
}

func (s *handleSet) len() int {
	if s.one == nil {
		return 0
	}
	return 1 + len(s.more)
}

// all yields every handle.
func (s *handleSet) all() iter.Seq[*Handle] {
	return func(yield func(*Handle) bool) {
		if s.one == nil || !yield(s.one) {
			return
		}
		for h := range s.more {
			if !yield(h) {
				return
			}
		}
	}
}

// stateLocked returns n's state, making it if need be; hmu is held.
func (n *Node) stateLocked() *nodeState {
	s := n.st.Load()
	if s == nil {
		s = &nodeState{}
		n.st.Store(s)
	}
	return s
}

// releaseStateLocked drops the state of a regular file that no longer
// needs it: no handle, none reading, no orphan descriptor. A directory's
// stays (see Node.st). hmu is held.
func (n *Node) releaseStateLocked() {
	s := n.st.Load()
	if s != nil && n.typ == unix.S_IFREG && s.handles.len() == 0 && s.reading == 0 && !s.hasOrphan {
		n.st.Store(nil)
	}
}

// dirState is the state of the directory n, made if need be.
func (n *Node) dirState() *nodeState {
	if s := n.st.Load(); s != nil {
		return s
	}
	n.hmu.Lock()
	defer n.hmu.Unlock()
	return n.stateLocked()
}

// handlesLocked is n's open handles; hmu is held. The set is not to be
// changed through it (it may be noHandles).
func (n *Node) handlesLocked() *handleSet {
	if s := n.st.Load(); s != nil {
		return &s.handles
	}
	return &noHandles
}

// noHandles is the handles of a node without state; never changed.
var noHandles handleSet

// writersLocked is the number of n's handles that can write; hmu is held.
func (n *Node) writersLocked() int32 {
	if s := n.st.Load(); s != nil {
		return s.writers
	}
	return 0
}

// readingLocked is the number of n's handles whose bytes served are not
// checked yet; hmu is held.
func (n *Node) readingLocked() int32 {
	if s := n.st.Load(); s != nil {
		return s.reading
	}
	return 0
}

// isForgotten reports whether the kernel forgot n.
func (n *Node) isForgotten() bool {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	return n.forgotten
}

var (
	_ fusefs.Node                = (*Node)(nil)
	_ fusefs.NodeGetattrer       = (*Node)(nil)
	_ fusefs.NodeSetattrer       = (*Node)(nil)
	_ fusefs.NodeForgetter       = (*Node)(nil)
	_ fusefs.NodeReadlinker      = (*Node)(nil)
	_ fusefs.NodeFsyncer         = (*Node)(nil)
	_ fusefs.NodeGetxattrer      = (*Node)(nil)
	_ fusefs.NodeListxattrer     = (*Node)(nil)
	_ fusefs.NodeSetxattrer      = (*Node)(nil)
	_ fusefs.NodeRemovexattrer   = (*Node)(nil)
	_ fusefs.NodeOpener          = (*Node)(nil)
	_ fusefs.NodeRequestLookuper = (*Node)(nil)
	_ fusefs.NodeCreater         = (*Node)(nil)
	_ fusefs.NodeMkdirer         = (*Node)(nil)
	_ fusefs.NodeRemover         = (*Node)(nil)
	_ fusefs.NodeRenamer         = (*Node)(nil)
	_ fusefs.NodeRenameFlagger   = (*Node)(nil)
	_ fusefs.NodeSymlinker       = (*Node)(nil)
	_ fusefs.NodeLinker          = (*Node)(nil)
	_ fusefs.NodeMknoder         = (*Node)(nil)
	_ fusefs.NodeIDKeeper        = (*Node)(nil)
)

// ServeID and SetServeID keep the NodeID the kernel knows n by, in place
// of an entry per node in the FUSE server's map (fusefs.NodeIDKeeper).
func (n *Node) ServeID() uint32 { return n.serveID.Load() }

// SetServeID records the NodeID the kernel knows n by. A node handed
// out again (a LOOKUP racing the kernel's FORGET of it: the server
// dropped its NodeID, then saved it anew) goes back into the table if
// Forget took it out: else the next lookup of its inode would make a
// second node, which the kernel would know as a second inode, a FIFO's
// readers parked on the first one never meeting the writers that come
// by name to the second (TestHostileSwapToFIFO with CLAMFUSE_FIFO_PARK).
func (n *Node) SetServeID(id uint32) {
	n.serveID.Store(id)
	if id != 0 && !n.isRoot() {
		n.fsys.revive(n)
	}
}

func (n *Node) isRoot() bool { return n == n.fsys.rootN }

// relPath is one path of n relative to the root; the caller holds treeMu.
func (n *Node) relPathLocked() (string, bool) {
	if n.isRoot() {
		return "", true
	}
	for l := range n.links.all() {
		p, ok := l.parent.relPathLocked()
		if ok {
			return path.Join(p, l.name), true
		}
	}
	return "", false
}

// RelPath is a path of n relative to the mount root, for logs and excludes.
func (n *Node) RelPath() string {
	n.fsys.treeMu.Lock()
	defer n.fsys.treeMu.Unlock()
	p, _ := n.relPathLocked()
	return p
}

func (n *Node) addLink(parent *Node, name string) {
	n.fsys.treeMu.Lock()
	defer n.fsys.treeMu.Unlock()
	if !n.isRoot() {
		n.links.add(link{parent, name})
	}
}

func (n *Node) dropLink(parent *Node, name string) {
	n.fsys.treeMu.Lock()
	defer n.fsys.treeMu.Unlock()
	n.links.remove(link{parent, name})
}

// removedDir records that the directory n was removed through the mount:
// its name is dropped, and n leaves the table of nodes by inode. The
// kernel keeps the inode, dead, for as long as anything holds it, and n
// its descriptor of the removed directory (pathFD) until the kernel
// forgets it (forget, which then finds nothing to drop). Where clamfuse's
// descriptor does not pin the backing inode (a FUSE backing filesystem),
// a new directory may get the removed one's inode number meanwhile; it
// gets a node of its own (linkNode), not n and its descriptor.
func (n *Node) removedDir(parent *Node, name string) {
	n.fsys.treeMu.Lock()
	defer n.fsys.treeMu.Unlock()
	n.links.remove(link{parent, name})
	n.fsys.nodes.delete(n)
}

// dropStaleLink forgets the name parent/name of n, which was found to
// lead elsewhere now, or nowhere: it changed behind the kernel's back.
// The kernel may still cache that name, and once clamfuse has forgotten
// it nothing else would expire it (watcher.forgotten).
func (n *Node) dropStaleLink(parent *Node, name string) {
	n.dropLink(parent, name)
	n.fsys.watch.forgotten(parent, name)
}

// dirFD opens the directory n beneath the root (O_PATH unless flags say
// otherwise). The returned release closes it or lets go of it.
func (n *Node) dirFD(flags int) (int, func(), error) {
	pfd, release, err := n.pathFD()
	if err != nil || flags == unix.O_PATH {
		return pfd, release, err
	}
	fd, err := unix.Openat(pfd, ".", flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	release()
	if err != nil {
		return -1, nil, err
	}
	return fd, func() { unix.Close(fd) }, nil
}

// pathFD returns an O_PATH descriptor of the directory n. A directory
// node keeps one while the kernel knows it, so most operations need no
// path walk, and a directory renamed or moved stays the same directory;
// but only so many nodes at once (dirCache), the others resolve their
// path again. The descriptor stays valid until release is called.
func (n *Node) pathFD() (int, func(), error) {
	if n.isRoot() {
		return n.fsys.root, func() {}, nil
	}
	s := n.st.Load()
	if s != nil {
		s.fdMu.RLock()
		if s.hasFD {
			s.touchFD(n.fsys.dirs)
			return int(s.fd), s.fdMu.RUnlock, nil
		}
		s.fdMu.RUnlock()
	}
	n.fsys.treeMu.Lock()
	p, ok := n.relPathLocked()
	n.fsys.treeMu.Unlock()
	if !ok {
		return -1, nil, syscall.ENOENT
	}
	fd, err := openBeneath(n.fsys.root, p, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, nil, err
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || (inoKey{st.Dev, st.Ino}) != n.id {
		// The path names another directory now.
		unix.Close(fd)
		return -1, nil, syscall.ENOENT
	}
	if s == nil {
		s = n.dirState()
	}
	// TryLock, never Lock: the caller may hold another directory's
	// descriptor, read-locked (Rename holds both of its directories),
	// and waiting here could close a cycle of waits (see dirCache).
	// When the lock is busy, this descriptor serves once.
	if !s.fdMu.TryLock() {
		return fd, func() { unix.Close(fd) }, nil
	}
	if !s.hasFD && !n.isForgotten() && n.fsys.dirs.add(s) { // bounded: dirfd.go
		s.fd, s.hasFD = int32(fd), true
		s.fdMu.Unlock()
		s.fdMu.RLock()
		if s.hasFD {
			return int(s.fd), s.fdMu.RUnlock, nil
		}
		s.fdMu.RUnlock()
		return n.pathFD()
	}
	s.fdMu.Unlock()
	return fd, func() { unix.Close(fd) }, nil
}

// isInode reports whether st is n's inode: its number, and its type,
// since a number freed is given to the next inode made (ext4 does at
// once), of any type.
func (n *Node) isInode(st *unix.Stat_t) bool {
	return (inoKey{st.Dev, st.Ino}) == n.id && uint16(st.Mode&unix.S_IFMT) == n.typ
}

// firstLink is one name of n, if it has any.
func (n *Node) firstLink() (link, bool) {
	n.fsys.treeMu.Lock()
	defer n.fsys.treeMu.Unlock()
	l := n.links.first
	return l, l.parent != nil
}

// at resolves one name of n to (directory descriptor, name), checking that
// the name still leads to n's inode; names that no longer do are dropped.
// For the root it returns (root, ""). release lets go of the descriptor.
func (n *Node) at() (dirfd int, name string, st unix.Stat_t, release func(), err error) {
	if n.isRoot() {
		err = unix.Fstat(n.fsys.root, &st)
		return n.fsys.root, "", st, func() {}, err
	}
	for {
		l, found := n.firstLink()
		if !found {
			return -1, "", st, nil, syscall.ENOENT
		}
		fd, close, err := l.parent.pathFD()
		if err != nil {
			if err == syscall.ENOENT || err == syscall.ENOTDIR || err == syscall.ELOOP || err == syscall.EXDEV {
				n.dropStaleLink(l.parent, l.name)
				continue
			}
			return -1, "", st, nil, err
		}
		err = unix.Fstatat(fd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && n.isInode(&st) {
			return fd, l.name, st, close, nil
		}
		close()
		if err != nil && err != syscall.ENOENT && err != syscall.ENOTDIR {
			return -1, "", st, nil, err
		}
		// The name is gone or names another inode now.
		n.dropStaleLink(l.parent, l.name)
	}
}

func (n *Node) stat() (unix.Stat_t, error) {
	_, _, st, release, err := n.at()
	if err == nil {
		release()
		return st, nil
	}
	// Unlinked but still open: the open descriptor knows.
	if fd := n.handleFD(); fd >= 0 {
		var hst unix.Stat_t
		herr := unix.Fstat(fd, &hst)
		unix.Close(fd)
		if herr == nil {
			return hst, nil
		}
	}
	// Unlinked and closed: the orphan descriptor, if kept.
	var fd int
	if err == syscall.ENOENT {
		fd = n.keptOrphanFD()
	} else {
		fd = n.orphanFD()
	}
	if fd >= 0 {
		var ost unix.Stat_t
		oerr := unix.Fstat(fd, &ost)
		unix.Close(fd)
		if oerr == nil {
			return ost, nil
		}
	}
	return st, err
}

// keepOrphan takes fd, an O_PATH descriptor of n's inode taken before an
// unlink or a rename through the mount removed one of its names (-1 for
// none), and keeps it if that was the inode's last name: an open or a
// stat that the kernel resolved to n just before, racing the removal,
// then still finds the inode, as on a local filesystem. The kernel
// forgets an inode without links at once, and Forget closes the
// descriptor; one that still has names elsewhere is not kept, so that
// no descriptor pins the space of a file deleted later.
func (n *Node) keepOrphan(fd int) {
	if fd < 0 {
		return
	}
	var st unix.Stat_t
	linked := unix.Fstat(fd, &st) != nil || st.Nlink > 0
	n.fsys.treeMu.Lock()
	named := n.links.len() > 0
	n.fsys.treeMu.Unlock()
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if linked || named || n.forgotten {
		unix.Close(fd)
		return
	}
	s := n.stateLocked()
	if s.hasOrphan || !n.fsys.addOrphan(n) {
		unix.Close(fd)
		n.releaseStateLocked()
		return
	}
	s.orphan, s.hasOrphan = int32(fd), true
	// Should the kernel keep the node (its idea of the link count may
	// be stale), the deleted file's space is not held for longer; and a
	// write that runs out of space first lets go of every orphan (see
	// FS.releaseOrphans).
	time.AfterFunc(orphanLife, func() { n.dropOrphan(fd) })
}

// dropOrphan closes the orphan descriptor fd if n still keeps it, and
// reports whether it did.
func (n *Node) dropOrphan(fd int) bool {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	s := n.st.Load()
	if s == nil || !s.hasOrphan || (fd >= 0 && int(s.orphan) != fd) {
		return false
	}
	unix.Close(int(s.orphan))
	s.hasOrphan = false
	n.fsys.removeOrphan(n)
	n.releaseStateLocked()
	return true
}

// orphanLife bounds how long keepOrphan keeps a descriptor: an open racing
// an unlink is microseconds behind it.
const orphanLife = 500 * time.Millisecond

// openOrphan opens n's inode through the descriptor keepOrphan kept, as
// the caller c.
func (n *Node) openOrphan(c caller.Cred, flags int) (int, error) {
	fd := n.keptOrphanFD()
	if fd < 0 {
		return -1, syscall.ENOENT
	}
	defer unix.Close(fd)
	return reopenRegular(c, fd, flags, &n.id)
}

// keptOrphanFD is orphanFD for a node the kernel asks about that has no
// name left: an unlink or a rename over its name through the mount may
// be between removing the backing name and keeping the orphan
// descriptor, and it waits for those in flight (microseconds) before it
// gives up. Without the wait a request there (an open, or the GETATTR
// the kernel sends before it) failed with ESTALE, and the kernel's one
// retry of the open could race the next rename over the name:
// TestSoakMixed saw an open fail so, once in a CI run.
func (n *Node) keptOrphanFD() int {
	if fd := n.orphanFD(); fd >= 0 {
		return fd
	}
	if hook := n.fsys.orphanWait.Load(); hook != nil {
		(*hook)()
	}
	n.fsys.removing.Lock()
	n.fsys.removing.Unlock()
	return n.orphanFD()
}

// orphanFD returns a duplicate of the orphan descriptor keepOrphan kept,
// or -1. The caller closes it.
func (n *Node) orphanFD() int {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	s := n.st.Load()
	if s == nil || !s.hasOrphan {
		return -1
	}
	fd, err := unix.FcntlInt(uintptr(s.orphan), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// victimFD returns an O_PATH descriptor of the regular file name in dirfd
// if it is the inode st, before an unlink or rename removes that name
// (see keepOrphan); -1 otherwise.
func victimFD(dirfd int, name string, st *unix.Stat_t) int {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	var got unix.Stat_t
	if unix.Fstat(fd, &got) != nil || got.Dev != st.Dev || got.Ino != st.Ino {
		unix.Close(fd)
		return -1
	}
	return fd
}

// inode returns an O_PATH descriptor of n's own inode and its stat: one
// of n's names opened beneath its parent's descriptor without following
// a symlink, and checked to be n (dev, ino), names that lead elsewhere
// now being dropped (as at does); once n has no name left, a copy of an
// open handle's or of the orphan's descriptor. Requests about n act on it,
// never on a name resolved again after a check. The caller closes it.
func (n *Node) inode() (int, unix.Stat_t, error) {
	var st unix.Stat_t
	if n.isRoot() {
		fd, err := unix.FcntlInt(uintptr(n.fsys.root), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1, st, err
		}
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, st, err
		}
		return fd, st, nil
	}
	for {
		l, found := n.firstLink()
		if !found {
			return n.unnamedFD()
		}
		pfd, release, err := l.parent.pathFD()
		if err != nil {
			if err == syscall.ENOENT || err == syscall.ENOTDIR || err == syscall.ELOOP || err == syscall.EXDEV {
				n.dropStaleLink(l.parent, l.name)
				continue
			}
			return -1, st, err
		}
		fd, err := unix.Openat(pfd, l.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		release()
		if err == nil {
			if err = unix.Fstat(fd, &st); err == nil && n.isInode(&st) {
				return fd, st, nil
			}
			unix.Close(fd)
		}
		if err != nil && err != syscall.ENOENT && err != syscall.ENOTDIR {
			return -1, st, err
		}
		// The name is gone or leads to another inode now.
		n.dropStaleLink(l.parent, l.name)
	}
}

// unnamedFD is inode for a node without a name: a copy of the descriptor
// of an open handle, or of the orphan descriptor.
func (n *Node) unnamedFD() (int, unix.Stat_t, error) {
	var st unix.Stat_t
	fd := n.handleFD()
	if fd < 0 {
		fd = n.keptOrphanFD()
	}
	if fd < 0 {
		return -1, st, syscall.ENOENT
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, err
	}
	return fd, st, nil
}

// Attr fills a with the backing inode's attributes.
func (n *Node) Attr(ctx context.Context, a *fuse.Attr) error {
	st, err := n.stat()
	if err == syscall.ENOENT {
		// Replaced or removed behind the kernel's back: it looks the
		// path up again (see Open).
		err = syscall.ESTALE
	}
	if err != nil {
		return errno(err)
	}
	fillAttr(a, &st, n.fsys.attrValid(&st))
	return nil
}

// Getattr is Attr, asked by the kernel.
func (n *Node) Getattr(ctx context.Context, req *fuse.GetattrRequest, resp *fuse.GetattrResponse) error {
	return n.Attr(ctx, &resp.Attr)
}

// Setattr changes size, mode, owner and times, in that order, like a
// local filesystem would for the same calls: on a descriptor of the
// node's own inode, each as the caller, so that the backing filesystem
// decides who may.
func (n *Node) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if n.fsys.opts.ReadOnly {
		return errno(syscall.EROFS)
	}
	fd, st, err := n.inode()
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	c := n.fsys.cred(&req.Header)
	v := req.Valid
	if !v.Size() && (v.Mode() || v.Uid() || v.Gid() || v.Atime() || v.Mtime() || v.AtimeNow() || v.MtimeNow()) {
		// These move ctime (utimes mtime too), not the contents: the
		// verdict of a file not verified goes with them (cache/carry.go).
		defer n.fsys.keepVerdict(&st, -1, "", fd)()
	}
	if v.Size() {
		if err := n.truncate(c, fd, &st, req); err != nil {
			return errno(err)
		}
		n.modified()
	}
	if v.Mode() {
		if err := chmod(c, fd, &st, unixMode(req.Mode)); err != nil {
			return errno(err)
		}
	}
	if v.Uid() || v.Gid() {
		uid, gid := -1, -1
		if v.Uid() {
			uid = int(req.Uid)
		}
		if v.Gid() {
			gid = int(req.Gid)
		}
		if err := caller.Chown(c, fd, uid, gid); err != nil {
			return errno(err)
		}
	}
	if v.Atime() || v.Mtime() || v.AtimeNow() || v.MtimeNow() {
		if err := caller.Utimens(c, fd, utimes(req)); err != nil {
			return errno(err)
		}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return errno(err)
	}
	fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	return nil
}

// truncate sets the size of n, open as fd (stat st), as the caller, who
// must be allowed to open the file for writing now. An ftruncate needs no
// permission but a descriptor open for writing: when the request names an
// open file (the kernel does for ftruncate and for a truncating open) and
// that fails, it goes through an open handle of n that can write (the
// kernel does not say which handle is the caller's).
func (n *Node) truncate(c caller.Cred, fd int, st *unix.Stat_t, req *fuse.SetattrRequest) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return syscall.EISDIR
	default:
		return syscall.EINVAL
	}
	err := caller.Truncate(c, fd, int64(req.Size), false)
	if err == syscall.EWOULDBLOCK {
		// A read lease being broken, the gate's most likely: wait for
		// it as the caller's truncate(2) would (see waitsForLease).
		if done, ok := leaseWaitStarts(c.Uid); ok {
			err = caller.Truncate(c, fd, int64(req.Size), true)
			done()
		}
	}
	if err != nil && req.Valid.Handle() {
		// Not allowed any more, or the inode cannot be opened again at
		// all (unlinked, on a backing FUSE filesystem that opens by
		// path).
		if hfd := n.writableHandleFD(); hfd >= 0 {
			defer unix.Close(hfd)
			err = unix.Ftruncate(hfd, int64(req.Size))
		}
	}
	return err
}

// chmod sets the mode of the inode fd (stat st) as the caller. The kernel
// also asks, in the caller's name, to clear the set-user-ID and
// set-group-ID bits after a write or a truncation by a caller who may
// write to the file but does not own it, which a chmod as that caller
// cannot do: such a request (it clears those bits and changes nothing
// else) is done as clamfuse, after checking that the caller may write
// to the file now, since its own write would clear them natively.
func chmod(c caller.Cred, fd int, st *unix.Stat_t, mode uint32) error {
	err := caller.Chmod(c, fd, st.Mode&unix.S_IFMT == unix.S_IFLNK, mode)
	if err == syscall.EPERM && clearsSetID(st.Mode&0o7777, mode) && caller.Access(c, fd, unix.W_OK) == nil {
		err = unix.Chmod(procPath(fd), mode)
	}
	return err
}

// clearsSetID reports whether going from mode old to mode new only
// clears set-user-ID or set-group-ID bits.
func clearsSetID(old, new uint32) bool {
	cleared := old &^ new
	return new&^old == 0 && cleared != 0 && cleared&^(unix.S_ISUID|unix.S_ISGID) == 0
}

func utimes(req *fuse.SetattrRequest) []unix.Timespec {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	v := req.Valid
	switch {
	case v.AtimeNow():
		ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
	case v.Atime():
		ts[0] = timespecOf(req.Atime)
	}
	switch {
	case v.MtimeNow():
		ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
	case v.Mtime():
		ts[1] = timespecOf(req.Mtime)
	}
	return ts
}

// timespecOf converts exactly: UnixNano would overflow after 2262.
func timespecOf(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// Forget drops the node from the table once the kernel forgets it.
func (n *Node) Forget() {
	if n.isRoot() || !n.fsys.forget(n) {
		return
	}
	n.fsys.trim.forgotten()
	// A lookup racing this Forget may hand the node out again: it then
	// works by path, without a cached descriptor (pathFD caches none once
	// forgotten is set).
	n.hmu.Lock()
	n.forgotten = true
	s := n.st.Load()
	if s != nil && s.hasOrphan {
		unix.Close(int(s.orphan))
		s.hasOrphan = false
		n.fsys.removeOrphan(n)
		n.releaseStateLocked()
	}
	n.hmu.Unlock()
	if s != nil {
		s.fdMu.Lock()
		defer s.fdMu.Unlock()
		if s.hasFD {
			n.fsys.dirs.drop(s)
		}
	}
}

// Readlink reads a symlink without following it.
func (n *Node) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (string, error) {
	fd, _, err := n.inode()
	if err != nil {
		return "", errno(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, unix.PathMax)
	for {
		k, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", errno(err)
		}
		if k < len(buf) {
			return string(buf[:k]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Fsync flushes the inode to stable storage.
func (n *Node) Fsync(ctx context.Context, req *fuse.FsyncRequest) error {
	if fd := n.handleFD(); fd >= 0 {
		defer unix.Close(fd)
		if req.Flags&1 != 0 {
			return errno(unix.Fdatasync(fd))
		}
		return errno(unix.Fsync(fd))
	}
	fd, st, err := n.inode()
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		return nil // nothing of clamfuse's to flush
	}
	sfd, err := unix.Open(procPath(fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(sfd)
	return errno(unix.Fsync(sfd))
}

// Getxattr reads one extended attribute, as the caller.
//
// An attribute free to read is read as clamfuse, through the descriptor
// of a file of n's that is open, when there is one (the same inode),
// sparing the lookup of n's inode: the kernel asks for
// security.capability before every write to a file open for writing
// (file_remove_privs: a FUSE superblock is never SB_NOSEC; passthrough
// writes included), so this is every such GETXATTR.
func (n *Node) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) error {
	if freeToRead(req.Name) {
		if rc := n.openConn(); rc != nil {
			var err error
			if rc.Control(func(fd uintptr) {
				err = getxattr(req, resp, func(buf []byte) (int, error) { return unix.Fgetxattr(int(fd), req.Name, buf) })
			}) == nil {
				return err
			}
			// Closed meanwhile: by its inode, as below.
		}
	}
	fd, _, err := n.inode()
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	if freeToRead(req.Name) {
		return getxattr(req, resp, func(buf []byte) (int, error) { return unix.Getxattr(procPath(fd), req.Name, buf) })
	}
	c := n.fsys.cred(&req.Header)
	return getxattr(req, resp, func(buf []byte) (int, error) { return caller.Getxattr(c, fd, req.Name, buf) })
}

// getxattr answers req with get, which reads the attribute into buf (its
// size when buf is empty).
func getxattr(req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse, get func(buf []byte) (int, error)) error {
	var buf []byte
	if req.Size > 0 {
		buf = make([]byte, req.Size)
	}
	k, err := get(buf)
	if err != nil {
		return errno(unlabelled(req.Name, err))
	}
	if req.Size == 0 {
		resp.Xattr = make([]byte, k)
		return nil
	}
	resp.Xattr = buf[:k]
	return nil
}

// openConn is the descriptor of one of n's open files, or nil when none
// is open. Its Control keeps the descriptor from being closed while it
// runs, and fails once it is closed.
func (n *Node) openConn() syscall.RawConn {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	for h := range n.handlesLocked().all() {
		if h.f == nil {
			continue
		}
		if rc, err := h.f.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// selinuxLabel is the attribute that holds a file's SELinux label.
const selinuxLabel = "security.selinux"

// unlabelled turns a missing SELinux label (ENODATA) into "not supported"
// (EOPNOTSUPP), which is what the mount is: the request reaches clamfuse
// only when no security module answered it in the kernel (SELinux, when
// enabled, serves security.selinux of every file itself, and labels a
// FUSE mount on its own). `ls -l` asks for the label of every file it
// lists; on EOPNOTSUPP it stops asking for the rest of the filesystem,
// where ENODATA made it ask again for each file, a FUSE round trip that
// the kernel never caches (issue #12: most of `ls -lR`'s requests). A
// label stored on the backing file is still read.
func unlabelled(name string, err error) error {
	if name == selinuxLabel && err == unix.ENODATA {
		return unix.EOPNOTSUPP
	}
	return err
}

// The extended attributes that hold POSIX ACLs.
const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
)

// freeToRead reports whether anyone who reached a file may read its
// extended attribute name natively, with no permission on the file: the
// POSIX ACLs, and the security namespace (whose security module the
// kernel has consulted for the caller already). Those are read as
// clamfuse, without the cost of acting as the caller: `ls -l` reads two
// for every file, and the kernel the ACLs for its own checks.
func freeToRead(name string) bool {
	return name == aclAccess || name == aclDefault || strings.HasPrefix(name, "security.")
}

// Listxattr lists extended attribute names. Listing needs no permission
// on the file, natively: it runs as clamfuse, and names in the trusted
// namespace are listed to root only, as natively (clamfuse, with
// CAP_SYS_ADMIN, sees them).
func (n *Node) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) error {
	fd, _, err := n.inode()
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	p := procPath(fd)
	var buf []byte
	for {
		k, err := unix.Listxattr(p, nil)
		if err != nil {
			return errno(err)
		}
		buf = make([]byte, k)
		k, err = unix.Listxattr(p, buf)
		if err == syscall.ERANGE {
			continue // grew in between
		}
		if err != nil {
			return errno(err)
		}
		buf = buf[:k]
		break
	}
	if req.Header.Uid != 0 {
		buf = dropTrusted(buf)
	}
	if req.Size != 0 && uint32(len(buf)) > req.Size {
		return errno(syscall.ERANGE)
	}
	if req.Size == 0 {
		resp.Xattr = make([]byte, len(buf))
		return nil
	}
	resp.Xattr = buf
	return nil
}

// dropTrusted removes the trusted.* names from a listxattr list.
func dropTrusted(list []byte) []byte {
	out := list[:0]
	for len(list) > 0 {
		name, rest, _ := bytes.Cut(list, []byte{0})
		if !bytes.HasPrefix(name, []byte("trusted.")) {
			out = append(out, name...)
			out = append(out, 0)
		}
		list = rest
	}
	return out
}

// Setxattr sets one extended attribute, as the caller.
func (n *Node) Setxattr(ctx context.Context, req *fuse.SetxattrRequest) error {
	if n.fsys.opts.ReadOnly {
		return errno(syscall.EROFS)
	}
	fd, _, err := n.inode()
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	return errno(caller.Setxattr(n.fsys.cred(&req.Header), fd, req.Name, req.Xattr, int(req.Flags)))
}

// Removexattr removes one extended attribute, as the caller.
func (n *Node) Removexattr(ctx context.Context, req *fuse.RemovexattrRequest) error {
	if n.fsys.opts.ReadOnly {
		return errno(syscall.EROFS)
	}
	fd, _, err := n.inode()
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	return errno(caller.Removexattr(n.fsys.cred(&req.Header), fd, req.Name))
}

// handleFD returns a duplicate of the descriptor of an open handle of n,
// of a writable one if there is one (an ftruncate of an unlinked file
// needs it: the kernel sends it only for a descriptor open for writing),
// or -1. The caller closes it. A handle's own descriptor must not be used
// outside hmu: Release drops the handle under hmu, then closes it.
func (n *Node) handleFD() int {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	var found *Handle
	for h := range n.handlesLocked().all() {
		found = h
		if h.writable {
			break
		}
	}
	if found == nil {
		return -1
	}
	fd, err := unix.FcntlInt(found.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// writableHandleFD is handleFD for a handle that can write only.
func (n *Node) writableHandleFD() int {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	for h := range n.handlesLocked().all() {
		if h.writable {
			fd, err := unix.FcntlInt(h.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return -1
			}
			return fd
		}
	}
	return -1
}

// addHandle registers h, unless deny is set and a handle of another
// process excludes it (writers.go): that handle is then returned. With
// conn (passthrough granted), it decides h's mode (passthrough.go).
func (n *Node) addHandle(h *Handle, deny bool, conn *fuse.Conn) *Handle {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if deny {
		if o := n.conflictLocked(h); o != nil {
			return o
		}
	}
	if conn != nil {
		n.passthroughLocked(h, conn)
	}
	s := n.stateLocked()
	s.handles.add(h)
	n.paged = true
	if h.writable {
		s.writers++
	}
	return nil
}

// dropHandle forgets h and reports whether it was the last writer of a
// file written through the mount since the last writer's close before
// (through h or another handle), and the passthrough backing id to close
// if h was the last handle sharing it (passthrough.go), or 0. The node's
// state goes with its last handle (a node the kernel keeps costs no state
// while closed).
func (n *Node) dropHandle(h *Handle) (lastWriter bool, closeID int32) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	s := n.stateLocked()
	s.handles.remove(h)
	if s.handles.len() == 0 {
		closeID = h.backingID
	}
	if h.writable {
		s.writers--
		// The scan after a write starts when the last writer goes,
		// whether that one wrote or another before it: a writer that
		// wrote may be released before one that wrote nothing (a
		// RELEASE is sent in the background, and served by any of the
		// request goroutines).
		written := h.wrote.Load() || s.unscanned
		s.unscanned = written && s.writers > 0
		lastWriter = written && s.writers == 0
	}
	n.releaseStateLocked()
	return lastWriter, closeID
}

// modified tells the gate that n's contents changed through the mount
// (a write, a truncation, fallocate), after the change reached the
// backing file: every verdict of n is stale, and a background scan of
// it still running judges a state that is gone.
func (n *Node) modified() { n.fsys.opts.Gate.Modified(n.id.dev, n.id.ino) }

// osFile wraps a descriptor for the gate and the handle.
func osFile(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }
