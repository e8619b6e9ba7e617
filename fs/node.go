package fs

import (
	"context"
	"os"
	"path"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// link is one name of a node: name in the directory parent.
type link struct {
	parent *Node
	name   string
}

// linkSet is the names of a node: almost always one (more for hard
// links), so a slice costs far less than a map per node.
type linkSet []link

func (s *linkSet) add(l link) {
	for _, x := range *s {
		if x == l {
			return
		}
	}
	*s = append(*s, l)
}

func (s *linkSet) remove(l link) {
	for i, x := range *s {
		if x == l {
			last := len(*s) - 1
			(*s)[i] = (*s)[last]
			(*s)[last] = link{} // drop the parent pointer
			*s = (*s)[:last]
			return
		}
	}
}

// reset forgets every name.
func (s *linkSet) reset() {
	clear(*s)
	*s = (*s)[:0]
}

// Node is one backing inode (file, directory, symlink or special file) as
// the kernel knows it. It holds no descriptor: each operation resolves one
// of the node's names beneath the root and checks the inode it finds.
//
// Lock order: FS.treeMu, then Node.hmu. Node.fdMu is never taken while
// treeMu is held; it is read-held while an operation uses Node.fd.
type Node struct {
	fsys    *FS
	id      inoKey
	typ     uint32 // S_IFMT bits
	writers int32  // open handles that can write; guarded by hmu

	links linkSet // guarded by fsys.treeMu; empty for the root

	fdMu      sync.RWMutex // guards fd, hasFD, forgotten, orphan, hasOrphan; read-held while fd or orphan is in use
	fd        int32        // O_PATH descriptor of a directory node, when hasFD
	orphan    int32        // O_PATH descriptor of a file that lost its last name through the mount, when hasOrphan (see keepOrphan)
	hasFD     bool
	forgotten bool
	hasOrphan bool

	hmu     sync.Mutex           // guards handles, writers, keep
	handles map[*Handle]struct{} // open file handles, for fstat and fsync
	keep    uint64               // stateDigest of the state the kernel's page cache holds, 0 for none (see keepCache)
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
	_ fusefs.NodeSymlinker       = (*Node)(nil)
	_ fusefs.NodeLinker          = (*Node)(nil)
	_ fusefs.NodeMknoder         = (*Node)(nil)
)

func (n *Node) isRoot() bool { return n == n.fsys.rootN }

// relPath is one path of n relative to the root; the caller holds treeMu.
func (n *Node) relPathLocked() (string, bool) {
	if n.isRoot() {
		return "", true
	}
	for _, l := range n.links {
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
// path walk, and a directory renamed or moved stays the same directory.
// The descriptor stays valid until release is called.
func (n *Node) pathFD() (int, func(), error) {
	if n.isRoot() {
		return n.fsys.root, func() {}, nil
	}
	n.fdMu.RLock()
	if n.hasFD {
		return int(n.fd), n.fdMu.RUnlock, nil
	}
	n.fdMu.RUnlock()
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
	n.fdMu.Lock()
	if !n.hasFD && !n.forgotten {
		n.fd, n.hasFD = int32(fd), true
		n.fdMu.Unlock()
		n.fdMu.RLock()
		if n.hasFD {
			return int(n.fd), n.fdMu.RUnlock, nil
		}
		n.fdMu.RUnlock()
		return n.pathFD()
	}
	n.fdMu.Unlock()
	return fd, func() { unix.Close(fd) }, nil
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
		n.fsys.treeMu.Lock()
		var l link
		found := false
		if len(n.links) > 0 {
			l, found = n.links[0], true
		}
		n.fsys.treeMu.Unlock()
		if !found {
			return -1, "", st, nil, syscall.ENOENT
		}
		fd, close, err := l.parent.pathFD()
		if err != nil {
			if err == syscall.ENOENT || err == syscall.ENOTDIR || err == syscall.ELOOP || err == syscall.EXDEV {
				n.dropLink(l.parent, l.name)
				continue
			}
			return -1, "", st, nil, err
		}
		err = unix.Fstatat(fd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && (inoKey{st.Dev, st.Ino} == n.id) {
			return fd, l.name, st, close, nil
		}
		close()
		if err != nil && err != syscall.ENOENT && err != syscall.ENOTDIR {
			return -1, "", st, nil, err
		}
		// The name is gone or names another inode now.
		n.dropLink(l.parent, l.name)
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
	n.fdMu.RLock()
	defer n.fdMu.RUnlock()
	if n.hasOrphan {
		var ost unix.Stat_t
		if oerr := unix.Fstat(int(n.orphan), &ost); oerr == nil {
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
	named := len(n.links) > 0
	n.fsys.treeMu.Unlock()
	n.fdMu.Lock()
	defer n.fdMu.Unlock()
	if linked || named || n.forgotten || n.hasOrphan {
		unix.Close(fd)
		return
	}
	n.orphan, n.hasOrphan = int32(fd), true
	n.fsys.addOrphan(n)
	// Should the kernel keep the node (its idea of the link count may
	// be stale), the deleted file's space is not held for longer; and a
	// write that runs out of space first lets go of every orphan (see
	// FS.releaseOrphans).
	time.AfterFunc(orphanLife, func() { n.dropOrphan(fd) })
}

// dropOrphan closes the orphan descriptor fd if n still keeps it, and
// reports whether it did.
func (n *Node) dropOrphan(fd int) bool {
	n.fdMu.Lock()
	defer n.fdMu.Unlock()
	if !n.hasOrphan || (fd >= 0 && int(n.orphan) != fd) {
		return false
	}
	unix.Close(int(n.orphan))
	n.hasOrphan = false
	n.fsys.removeOrphan(n)
	return true
}

// orphanLife bounds how long keepOrphan keeps a descriptor: an open racing
// an unlink is microseconds behind it.
const orphanLife = 500 * time.Millisecond

// openOrphan opens n's inode through the descriptor keepOrphan kept.
func (n *Node) openOrphan(flags int) (int, error) {
	n.fdMu.RLock()
	defer n.fdMu.RUnlock()
	if !n.hasOrphan {
		return -1, syscall.ENOENT
	}
	return openRegular(unix.AT_FDCWD, procPath(int(n.orphan)), flags, &n.id)
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

// Setattr changes size, mode, owner and times, in that order, like
// a local filesystem would for the same calls.
func (n *Node) Setattr(ctx context.Context, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	if n.fsys.opts.ReadOnly {
		return errno(syscall.EROFS)
	}
	dirfd, name, st, release, err := n.at()
	if err != nil {
		if err == syscall.ENOENT {
			if fd := n.handleFD(); fd >= 0 {
				defer unix.Close(fd)
				return n.setattrFD(fd, req, resp)
			}
		}
		return errno(err)
	}
	defer release()
	v := req.Valid
	if v.Size() {
		if err := truncateAt(dirfd, name, int64(req.Size)); err != nil {
			return errno(err)
		}
		n.modified()
	}
	if v.Mode() {
		if err := chmodAt(dirfd, name, unixMode(req.Mode)); err != nil {
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
		if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW|emptyPath(name)); err != nil {
			return errno(err)
		}
	}
	if v.Atime() || v.Mtime() || v.AtimeNow() || v.MtimeNow() {
		ts := utimes(req)
		var err error
		if name == "" {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, procPath(dirfd), ts, 0)
		} else {
			err = unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return errno(err)
		}
	}
	if name == "" {
		err = unix.Fstat(dirfd, &st)
	} else {
		err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return errno(err)
	}
	fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	return nil
}

// setattrFD applies a Setattr to an open descriptor (the file is unlinked).
func (n *Node) setattrFD(fd int, req *fuse.SetattrRequest, resp *fuse.SetattrResponse) error {
	v := req.Valid
	if v.Size() {
		if err := unix.Ftruncate(fd, int64(req.Size)); err != nil {
			return errno(err)
		}
		n.modified()
	}
	if v.Mode() {
		if err := unix.Fchmod(fd, unixMode(req.Mode)); err != nil {
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
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return errno(err)
		}
	}
	if v.Atime() || v.Mtime() || v.AtimeNow() || v.MtimeNow() {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd), utimes(req), 0); err != nil {
			return errno(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errno(err)
	}
	fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	return nil
}

func emptyPath(name string) int {
	if name == "" {
		return unix.AT_EMPTY_PATH
	}
	return 0
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

// truncateAt truncates name in dirfd without following a symlink.
func truncateAt(dirfd int, name string, size int64) error {
	if name == "" {
		return syscall.EISDIR
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Ftruncate(fd, size)
}

// chmodAt changes the mode of name in dirfd without following a symlink
// (fchmodat cannot refuse to follow one on older kernels).
func chmodAt(dirfd int, name string, mode uint32) error {
	if name == "" {
		return unix.Chmod(procPath(dirfd), mode)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return syscall.EOPNOTSUPP
	}
	return unix.Chmod(procPath(fd), mode)
}

// Forget drops the node from the table once the kernel forgets it.
func (n *Node) Forget() {
	if n.isRoot() {
		return
	}
	n.fsys.forget(n)
	n.fdMu.Lock()
	defer n.fdMu.Unlock()
	if n.hasFD {
		unix.Close(int(n.fd))
		n.hasFD = false
	}
	if n.hasOrphan {
		unix.Close(int(n.orphan))
		n.hasOrphan = false
		n.fsys.removeOrphan(n)
	}
	// A lookup racing this Forget may hand the node out again: it then
	// works by path, without a cached descriptor.
	n.forgotten = true
}

// Readlink reads a symlink without following it.
func (n *Node) Readlink(ctx context.Context, req *fuse.ReadlinkRequest) (string, error) {
	dirfd, name, _, release, err := n.at()
	if err != nil {
		return "", errno(err)
	}
	defer release()
	buf := make([]byte, unix.PathMax)
	for {
		k, err := unix.Readlinkat(dirfd, name, buf)
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
	dirfd, name, _, release, err := n.at()
	if err != nil {
		return errno(err)
	}
	defer release()
	fd := dirfd
	if name != "" {
		fd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return errno(err)
		}
		defer unix.Close(fd)
	}
	return errno(unix.Fsync(fd))
}

// xattrPath names the node for the l*xattr calls, which do not follow a
// final symlink. The root is named through its descriptor.
func (n *Node) xattrPath() (string, func(), bool, error) {
	dirfd, name, _, release, err := n.at()
	if err != nil {
		return "", nil, false, err
	}
	if name == "" {
		return procPath(dirfd), release, true, nil
	}
	return procPath(dirfd) + "/" + name, release, false, nil
}

// Getxattr reads one extended attribute.
func (n *Node) Getxattr(ctx context.Context, req *fuse.GetxattrRequest, resp *fuse.GetxattrResponse) error {
	p, release, follow, err := n.xattrPath()
	if err != nil {
		return errno(err)
	}
	defer release()
	get := unix.Lgetxattr
	if follow {
		get = unix.Getxattr
	}
	size := int(req.Size)
	if size == 0 {
		k, err := get(p, req.Name, nil)
		if err != nil {
			return errno(err)
		}
		resp.Xattr = make([]byte, k)
		return nil
	}
	buf := make([]byte, size)
	k, err := get(p, req.Name, buf)
	if err != nil {
		return errno(err)
	}
	resp.Xattr = buf[:k]
	return nil
}

// Listxattr lists extended attribute names.
func (n *Node) Listxattr(ctx context.Context, req *fuse.ListxattrRequest, resp *fuse.ListxattrResponse) error {
	p, release, follow, err := n.xattrPath()
	if err != nil {
		return errno(err)
	}
	defer release()
	list := unix.Llistxattr
	if follow {
		list = unix.Listxattr
	}
	k, err := list(p, nil)
	if err != nil {
		return errno(err)
	}
	buf := make([]byte, k)
	k, err = list(p, buf)
	if err != nil {
		return errno(err)
	}
	if req.Size != 0 && uint32(k) > req.Size {
		return errno(syscall.ERANGE)
	}
	if req.Size == 0 {
		resp.Xattr = make([]byte, k)
		return nil
	}
	resp.Xattr = buf[:k]
	return nil
}

// Setxattr sets one extended attribute.
func (n *Node) Setxattr(ctx context.Context, req *fuse.SetxattrRequest) error {
	if n.fsys.opts.ReadOnly {
		return errno(syscall.EROFS)
	}
	p, release, follow, err := n.xattrPath()
	if err != nil {
		return errno(err)
	}
	defer release()
	if follow {
		return errno(unix.Setxattr(p, req.Name, req.Xattr, int(req.Flags)))
	}
	return errno(unix.Lsetxattr(p, req.Name, req.Xattr, int(req.Flags)))
}

// Removexattr removes one extended attribute.
func (n *Node) Removexattr(ctx context.Context, req *fuse.RemovexattrRequest) error {
	if n.fsys.opts.ReadOnly {
		return errno(syscall.EROFS)
	}
	p, release, follow, err := n.xattrPath()
	if err != nil {
		return errno(err)
	}
	defer release()
	if follow {
		return errno(unix.Removexattr(p, req.Name))
	}
	return errno(unix.Lremovexattr(p, req.Name))
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
	for h := range n.handles {
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

func (n *Node) addHandle(h *Handle) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if n.handles == nil {
		n.handles = map[*Handle]struct{}{}
	}
	n.handles[h] = struct{}{}
	if h.writable {
		n.writers++
	}
}

// dropHandle forgets h and reports whether it was the last writer of a
// file written through it.
func (n *Node) dropHandle(h *Handle) (lastWriter bool) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	delete(n.handles, h)
	if len(n.handles) == 0 {
		n.handles = nil // a node the kernel keeps costs no map while closed
	}
	if h.writable {
		n.writers--
		return n.writers == 0 && h.wrote.Load()
	}
	return false
}

// modified tells the gate that n's contents changed through the mount
// (a write, a truncation, fallocate): a background scan of it still
// running judges a state that is gone.
func (n *Node) modified() { n.fsys.opts.Gate.Modified(n.id.dev, n.id.ino) }

// osFile wraps a descriptor for the gate and the handle.
func osFile(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }
