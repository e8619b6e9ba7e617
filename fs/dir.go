package fs

import (
	"context"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Directory operations. Each resolves the directory beneath the root and
// acts on one name in it with an *at call that does not follow symlinks,
// as the caller (package caller): the backing filesystem decides, as for
// that user, whether the directory may be searched or changed (mode, ACLs,
// the sticky bit), and what is created belongs to the caller.

// Lookup finds name in the directory n, which the caller must be allowed
// to search now.
func (n *Node) Lookup(ctx context.Context, req *fuse.LookupRequest, resp *fuse.LookupResponse) (fusefs.Node, error) {
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	seq := n.fsys.watch.batchesTaken()
	var st unix.Stat_t
	if err := caller.Fstatat(n.fsys.cred(&req.Header), dirfd, req.Name, &st); err != nil {
		return nil, errno(err)
	}
	n.fsys.meet(dirfd, req.Name, &st)
	child := n.fsys.node(dirfd, &st, n, req.Name)
	// The entry's attributes are this stat's (fusefs asks Attr, a stat
	// more, only when none are filled).
	fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	resp.EntryValid = n.fsys.entryValid(n)
	if !n.fsys.settled(seq, dirfd, n, req.Name, child) {
		// Changed already: see watch.go.
		resp.EntryValid, resp.Attr.Valid = 0, 0
	}
	return child, nil
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

// Mkdir creates a directory as the caller.
func (n *Node) Mkdir(ctx context.Context, req *fuse.MkdirRequest) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	c := n.fsys.cred(&req.Header)
	mode := newMode(dirfd, unixMode(req.Mode), unixMode(req.Umask))
	if err := n.fsys.retryFull(func() error { return caller.Mkdirat(c, dirfd, req.Name, mode) }); err != nil {
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.Name, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Mknod creates a FIFO, socket or device node as the caller.
func (n *Node) Mknod(ctx context.Context, req *fuse.MknodRequest) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	mode := fileType(req.Mode) | newMode(dirfd, unixMode(req.Mode), unixMode(req.Umask))
	if err := caller.Mknodat(n.fsys.cred(&req.Header), dirfd, req.Name, mode, int(req.Rdev)); err != nil {
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.Name, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Symlink creates a symlink as the caller.
func (n *Node) Symlink(ctx context.Context, req *fuse.SymlinkRequest) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	if err := caller.Symlinkat(n.fsys.cred(&req.Header), req.Target, dirfd, req.NewName); err != nil {
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.NewName, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Link makes a new name for the node old in the directory n, as the
// caller: fs.protected_hardlinks applies as natively.
func (n *Node) Link(ctx context.Context, req *fuse.LinkRequest, old fusefs.Node) (fusefs.Node, error) {
	if err := n.writable(); err != nil {
		return nil, errno(err)
	}
	src, ok := old.(*Node)
	if !ok {
		return nil, errno(syscall.EXDEV)
	}
	sfd, sst, err := src.inode()
	if err != nil {
		return nil, errno(err)
	}
	defer unix.Close(sfd)
	if sst.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil, errno(syscall.EPERM)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, errno(err)
	}
	defer release()
	// A new name moves ctime: the verdict of a file not verified goes
	// with it (cache/carry.go).
	carried := n.fsys.keepVerdict(&sst, -1, "", sfd)
	err = caller.Link(n.fsys.cred(&req.Header), sfd, dirfd, req.NewName)
	carried()
	if err != nil {
		return nil, errno(err)
	}
	child, err := n.entry(dirfd, req.NewName, nil)
	if err != nil {
		return nil, errno(err)
	}
	return child, nil
}

// Remove unlinks a file or removes an empty directory, as the caller.
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
	flags := 0
	if req.Dir {
		flags = unix.AT_REMOVEDIR
	}
	keep := -1
	if victimErr == nil && !req.Dir {
		keep = victimFD(dirfd, req.Name, &st)
	}
	carried := func() {}
	if keep >= 0 && st.Nlink > 1 {
		// One name of several removed: ctime moves, and the verdict of
		// a file not verified goes with it (cache/carry.go).
		carried = n.fsys.keepVerdict(&st, -1, "", keep)
	}
	if keep >= 0 {
		n.fsys.removing.RLock()
		defer n.fsys.removing.RUnlock()
	}
	err = caller.Unlinkat(n.fsys.cred(&req.Header), dirfd, req.Name, flags)
	carried()
	if err != nil {
		if keep >= 0 {
			unix.Close(keep)
		}
		return errno(err)
	}
	if hook := n.fsys.removed.Load(); hook != nil && keep >= 0 {
		(*hook)()
	}
	if victimErr == nil {
		if victim := n.fsys.lookupID(&st); victim != nil {
			if req.Dir && victim.typ == unix.S_IFDIR {
				victim.removedDir(n, req.Name)
			} else {
				victim.dropLink(n, req.Name)
			}
			victim.keepOrphan(keep)
			keep = -1
		}
	}
	if keep >= 0 {
		unix.Close(keep)
	}
	return nil
}

// RenameFlags are the renameat2(2) flags Rename handles: all of them,
// each left to the backing filesystem to do as the caller, or to refuse.
func (n *Node) RenameFlags() fuse.RenameFlags {
	return fuse.RenameNoReplace | fuse.RenameExchange | fuse.RenameWhiteout
}

// Rename moves a name, replacing an existing target as rename(2) does,
// as the caller, with renameat2(2)'s flags on the two directories'
// descriptors: RENAME_NOREPLACE fails with EEXIST where the new name
// exists, RENAME_EXCHANGE swaps the two names' inodes, RENAME_WHITEOUT
// leaves a whiteout at the old name. The backing filesystem decides each
// for the caller (the sticky bit, for an exchange both names). The
// kernel moves (or swaps) its own dentries when the call succeeds; the
// verdicts, kept by inode and state, go with the inodes: an exchange
// leaves an infected file denied under its new name, and a name that
// now leads to it denied at its next open.
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
	exchange := req.Flags&fuse.RenameExchange != 0
	var sst, dst unix.Stat_t
	srcErr := unix.Fstatat(odir, req.OldName, &sst, unix.AT_SYMLINK_NOFOLLOW)
	dstErr := unix.Fstatat(ndir, req.NewName, &dst, unix.AT_SYMLINK_NOFOLLOW)
	same := srcErr == nil && dstErr == nil && (inoKey{dst.Dev, dst.Ino} == inoKey{sst.Dev, sst.Ino})
	keep := -1
	if dstErr == nil && !same && !exchange && req.Flags&fuse.RenameNoReplace == 0 {
		keep = victimFD(ndir, req.NewName, &dst)
	}
	// A rename moves ctime: the verdict of a file not verified goes
	// with it (cache/carry.go), for both files of an exchange.
	var carried, carriedOther func()
	if srcErr == nil && !same {
		carried = n.fsys.keepVerdict(&sst, odir, req.OldName, -1)
	}
	if exchange && dstErr == nil && !same {
		carriedOther = n.fsys.keepVerdict(&dst, ndir, req.NewName, -1)
	}
	if keep >= 0 {
		n.fsys.removing.RLock()
		defer n.fsys.removing.RUnlock()
	}
	err = caller.Renameat(n.fsys.cred(&req.Header), odir, req.OldName, ndir, req.NewName, uint(req.Flags))
	if carried != nil {
		carried()
	}
	if carriedOther != nil {
		carriedOther()
	}
	if err != nil {
		if keep >= 0 {
			unix.Close(keep)
		}
		return errno(err)
	}
	if hook := n.fsys.removed.Load(); hook != nil && keep >= 0 {
		(*hook)()
	}
	if same {
		// Two names of one inode: rename(2) leaves both in place, and
		// an exchange of them changes nothing.
		return nil
	}
	var src *Node
	if srcErr == nil {
		src = n.fsys.lookupID(&sst)
	}
	if exchange {
		var other *Node
		if dstErr == nil {
			other = n.fsys.lookupID(&dst)
		}
		n.fsys.treeMu.Lock()
		moveLinkLocked(src, link{n, req.OldName}, link{nd, req.NewName})
		moveLinkLocked(other, link{nd, req.NewName}, link{n, req.OldName})
		n.fsys.treeMu.Unlock()
		return nil
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
	n.fsys.treeMu.Lock()
	moveLinkLocked(src, link{n, req.OldName}, link{nd, req.NewName})
	n.fsys.treeMu.Unlock()
	return nil
}

// moveLinkLocked records that the name from of x (nil: a node the kernel
// does not know) is to now; a directory has that one name. The caller
// holds treeMu.
func moveLinkLocked(x *Node, from, to link) {
	if x == nil || x.isRoot() {
		return
	}
	x.links.remove(from)
	if x.typ == unix.S_IFDIR {
		x.links.reset()
	}
	x.links.add(to)
}
