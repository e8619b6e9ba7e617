package fs

import (
	"context"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Directory operations. Each resolves the directory beneath the root and
// acts on one name in it with an *at call that does not follow symlinks.

// Lookup finds name in the directory n.
func (n *Node) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, req.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, errno(err)
	}
	resp.EntryValid = n.fsys.entryValid(n)
	return n.fsys.node(dirfd, &st, n, req.Name), nil
}

// entry stats a name just created in dirfd and returns its node.
func (n *Node) entry(dirfd int, name string, resp *fuse.LookupResponse) (*Node, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if resp != nil {
		resp.EntryValid = n.fsys.entryValid(n)
		fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	}
	return n.fsys.node(dirfd, &st, n, name), nil
}

func (n *Node) writable() error {
	if n.fsys.opts.ReadOnly {
		return syscall.EROFS
	}
	return nil
}

// Mkdir creates a directory owned by the caller.
func (n *Node) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	if err := n.fsys.retryFull(func() error { return unix.Mkdirat(dirfd, req.Name, unixMode(req.Mode)) }); err != nil {
		return nil, errno(err)
	}
	if err := n.fsys.ownNew(dirfd, req.Name, &req.Header, unixMode(req.Mode)); err != nil {
		unix.Unlinkat(dirfd, req.Name, unix.AT_REMOVEDIR)
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.Name, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Mknod creates a FIFO, socket or device node owned by the caller.
func (n *Node) Mknod(ctx context.Context, req *fuse.MknodRequest) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	if err := unix.Mknodat(dirfd, req.Name, fileType(req.Mode)|unixMode(req.Mode)&^setID, int(req.Rdev)); err != nil {
		return nil, errno(err)
	}
	if err := n.fsys.ownNew(dirfd, req.Name, &req.Header, unixMode(req.Mode)); err != nil {
		unix.Unlinkat(dirfd, req.Name, 0)
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.Name, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Symlink creates a symlink owned by the caller.
func (n *Node) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	if err := unix.Symlinkat(req.Target, dirfd, req.NewName); err != nil {
		return nil, errno(err)
	}
	if err := n.fsys.ownNew(dirfd, req.NewName, &req.Header, keepMode); err != nil {
		unix.Unlinkat(dirfd, req.NewName, 0)
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.NewName, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Link makes a new name for the node old in the directory n.
func (n *Node) Link(ctx context.Context, req *fuse.LinkRequest, old fusefs.Node) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	src, ok := old.(*Node)
	if !ok {
		return nil, errno(syscall.EXDEV)
	}
	sdir, sname, _, srelease, err := src.at()
	if err != nil {
		return nil, errno(err)
	}
	if sname == "" {
		srelease()
		return nil, errno(syscall.EPERM)
	}
	// sdir may be n's descriptor, read-locked: work on a copy, so as not
	// to read-lock n twice (a Forget waiting for n's lock in between
	// would deadlock).
	sdir, err = unix.FcntlInt(uintptr(sdir), unix.F_DUPFD_CLOEXEC, 0)
	srelease()
	if err != nil {
		return nil, errno(err)
	}
	defer unix.Close(sdir)
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	if err := unix.Linkat(sdir, sname, dirfd, req.NewName, 0); err != nil {
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.NewName, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Remove unlinks a file or removes an empty directory.
func (n *Node) Remove(ctx context.Context, req *fuse.RemoveRequest) error {
	if err := n.writable(); err != nil {
		return errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return errno(err)
	}
	defer release()
	var st unix.Stat_t
	victimErr := unix.Fstatat(dirfd, req.Name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if victimErr == nil && stickyForbids(dirfd, &st, req.Header.Uid) {
		return errno(syscall.EPERM)
	}
	flags := 0
	if req.Dir {
		flags = unix.AT_REMOVEDIR
	}
	keep := -1
	if victimErr == nil && !req.Dir {
		keep = victimFD(dirfd, req.Name, &st)
	}
	if err := unix.Unlinkat(dirfd, req.Name, flags); err != nil {
		if keep >= 0 {
			unix.Close(keep)
		}
		return errno(err)
	}
	if victimErr == nil {
		if victim := n.fsys.lookupID(&st); victim != nil {
			victim.dropLink(n, req.Name)
			victim.keepOrphan(keep)
			keep = -1
		}
	}
	if keep >= 0 {
		unix.Close(keep)
	}
	return nil
}

// Rename moves a name, replacing an existing target as rename(2) does.
func (n *Node) Rename(ctx context.Context, req *fuse.RenameRequest, newDir fusefs.Node) error {
	if err := n.writable(); err != nil {
		return errno(err)
	}
	nd, ok := newDir.(*Node)
	if !ok {
		return errno(syscall.EXDEV)
	}
	odir, orelease, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return errno(err)
	}
	defer orelease()
	// Within one directory, use its descriptor twice rather than
	// read-lock the node twice (a Forget waiting for its lock in between
	// would deadlock).
	ndir, nrelease := odir, func() {}
	if nd != n {
		if ndir, nrelease, err = nd.dirFD(unix.O_PATH); err != nil {
			return errno(err)
		}
	}
	defer nrelease()
	var sst, dst unix.Stat_t
	srcErr := unix.Fstatat(odir, req.OldName, &sst, unix.AT_SYMLINK_NOFOLLOW)
	dstErr := unix.Fstatat(ndir, req.NewName, &dst, unix.AT_SYMLINK_NOFOLLOW)
	if (srcErr == nil && stickyForbids(odir, &sst, req.Header.Uid)) ||
		(dstErr == nil && stickyForbids(ndir, &dst, req.Header.Uid)) {
		return errno(syscall.EPERM)
	}
	same := srcErr == nil && dstErr == nil && (inoKey{dst.Dev, dst.Ino} == inoKey{sst.Dev, sst.Ino})
	keep := -1
	if dstErr == nil && !same {
		keep = victimFD(ndir, req.NewName, &dst)
	}
	if err := unix.Renameat(odir, req.OldName, ndir, req.NewName); err != nil {
		if keep >= 0 {
			unix.Close(keep)
		}
		return errno(err)
	}
	if same {
		// Two names of one inode: rename(2) leaves both in place.
		return nil
	}
	var src *Node
	if srcErr == nil {
		src = n.fsys.lookupID(&sst)
	}
	if dstErr == nil {
		if victim := n.fsys.lookupID(&dst); victim != nil {
			victim.dropLink(nd, req.NewName)
			victim.keepOrphan(keep)
			keep = -1
		}
	}
	if keep >= 0 {
		unix.Close(keep)
	}
	if src != nil {
		n.fsys.treeMu.Lock()
		if !src.isRoot() {
			src.links.remove(link{n, req.OldName})
			if src.typ == unix.S_IFDIR {
				src.links.reset()
			}
			src.links.add(link{nd, req.NewName})
		}
		n.fsys.treeMu.Unlock()
	}
	return nil
}

// stickyForbids reports whether the sticky bit of the directory dirfd
// forbids uid to remove, or rename away or over, its entry st: only the
// owner of the entry or of the directory (or root) may. The kernel checks
// this too (default_permissions; fs/internal/fuse passes S_ISVTX on), but
// clamfuse acts as root on the backing directory, so it does not rely on
// the kernel alone.
func stickyForbids(dirfd int, st *unix.Stat_t, uid uint32) bool {
	if uid == 0 {
		return false
	}
	var dst unix.Stat_t
	if err := unix.Fstat(dirfd, &dst); err != nil {
		return true
	}
	return dst.Mode&unix.S_ISVTX != 0 && uid != dst.Uid && uid != st.Uid
}

// dirHandle lists a directory once per open, so offsets stay stable.
type dirHandle struct {
	fd int
}

var (
	_ fusefs.HandleReadDirAller = (*dirHandle)(nil)
	_ fusefs.HandleReleaser     = (*dirHandle)(nil)
)

func (d *dirHandle) ReadDirAll(ctx context.Context) ([]fuse.Dirent, error) {
	// bazil asks again after a rewind (offset 0): list from the start.
	if _, err := unix.Seek(d.fd, 0, 0); err != nil {
		return nil, errno(err)
	}
	ents, err := readDirents(d.fd)
	if err != nil {
		return nil, errno(err)
	}
	return ents, nil
}

func (d *dirHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	return errno(unix.Close(d.fd))
}
