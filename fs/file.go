package fs

import (
	"context"
	"hash/maphash"
	"path"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Open is the gate of clamfuse: an open that can read a regular file is
// allowed only when the gate says the very descriptor that will serve the
// reads holds bytes judged clean.
func (n *Node) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	if req.Dir {
		// A fresh descriptor (not O_PATH) that the handle owns.
		fd, _, err := n.dirFD(unix.O_RDONLY)
		if err != nil {
			return nil, errno(err)
		}
		return &dirHandle{fd: fd}, nil
	}
	flags := backingFlags(req.Flags) &^ unix.O_TRUNC
	if n.fsys.opts.ReadOnly && flags&unix.O_ACCMODE != unix.O_RDONLY {
		return nil, errno(syscall.EROFS)
	}
	dirfd, name, _, release, err := n.at()
	if err == syscall.ENOENT {
		// No name leads to this inode any more: replaced or removed
		// behind the kernel's back, or by a rename that raced this open.
		// While it is open, open it again through that descriptor, as a
		// local filesystem opens the inode its path walk found. Else
		// ESTALE makes the kernel look the path up again and retry,
		// and find the new file, or nothing.
		if hfd := n.handleFD(); hfd >= 0 {
			fd, err := openRegular(unix.AT_FDCWD, procPath(hfd), flags, &n.id)
			unix.Close(hfd)
			if err == nil {
				return n.gate(ctx, fd, flags, &req.Header, resp, -1, "")
			}
		}
		if fd, err := n.openOrphan(flags); err == nil {
			return n.gate(ctx, fd, flags, &req.Header, resp, -1, "")
		}
		err = syscall.ESTALE
	}
	if err != nil {
		return nil, errno(err)
	}
	fd, err := openRegular(dirfd, name, flags, &n.id)
	if err != nil {
		release()
		return nil, errno(err)
	}
	// The actions on a detection work in the directory: keep a copy of its
	// descriptor, and let go of the node's own before the scan, which may
	// take up to clamd.timeout.
	qdir, err := unix.FcntlInt(uintptr(dirfd), unix.F_DUPFD_CLOEXEC, 0)
	release()
	if err != nil {
		unix.Close(fd)
		return nil, errno(err)
	}
	defer unix.Close(qdir)
	return n.gate(ctx, fd, flags, &req.Header, resp, qdir, name)
}

// gate asks the gate about fd when the open can read, and wraps fd in a
// handle when allowed. It owns fd. fd was opened as name in dirfd, where
// the actions on an infected file (quarantine) find it.
func (n *Node) gate(ctx context.Context, fd, flags int, hdr *fuse.Header, resp *fuse.OpenResponse, dirfd int, name string) (*Handle, error) {
	rel := n.RelPath()
	f := osFile(fd, rel)
	keep := false
	if flags&unix.O_ACCMODE != unix.O_WRONLY && !n.excluded() {
		d := n.fsys.opts.Gate.Check(ctx, f, cache.Opener{Path: rel, Pid: hdr.Pid, Uid: hdr.Uid})
		if !d.Allow {
			f.Close()
			if d.Reason == cache.ReasonInfected && n.fsys.opts.Actions != nil {
				n.fsys.opts.Actions.Infected(d, cache.Opener{Path: rel, Pid: hdr.Pid, Uid: hdr.Uid}, dirfd, name)
				// A quarantine moved it away behind the kernel's back.
				n.fsys.watch.changed(n)
			}
			return nil, denied(d)
		}
		keep = d.Reason == cache.ReasonClean
		if keep && n.keepCache(d.Key) {
			// Same state as the last clean open: the kernel's page cache
			// holds exactly the bytes judged clean; keep it.
			resp.Flags |= fuse.OpenKeepCache
		}
	}
	writable := flags&unix.O_ACCMODE != unix.O_RDONLY
	h := &Handle{node: n, f: f, writable: writable, who: cache.Opener{Path: rel, Pid: hdr.Pid, Uid: hdr.Uid}}
	n.addHandle(h)
	if writable || !keep {
		n.dropKeepCache()
	}
	if !writable && n.fsys.opts.passthroughReads {
		h.passthrough(hdr.Conn, resp)
	}
	return h, nil
}

// keepCache records that the kernel's page cache will hold the bytes of
// state k after this open, and reports whether it already did: only then
// may the open keep the cache (FOPEN_KEEP_CACHE). Any change to the file,
// through the mount or behind it, changes k.
func (n *Node) keepCache(k cache.Key) bool {
	d := stateDigest(k)
	n.hmu.Lock()
	defer n.hmu.Unlock()
	ok := n.keep == d && n.writers == 0
	n.keep = d
	return ok
}

func (n *Node) dropKeepCache() {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.keep = 0
}

// digestSeed keys stateDigest, afresh in every process.
var digestSeed = maphash.MakeSeed()

// stateDigest stands for a file state in a Node (8 bytes instead of a
// cache.Key's 64, for every inode the kernel holds). It is never 0. The
// seed is random and never leaves the process, so two states share a
// digest by chance only, with probability 2^-64, and nobody can search
// for a pair that does.
func stateDigest(k cache.Key) uint64 {
	if d := maphash.Comparable(digestSeed, k); d != 0 {
		return d
	}
	return 1
}

// excluded reports whether opens of n skip the scan. The kernel does not
// say through which name a file is opened, so a file with several names
// (hard links) is excluded only when every name known for it is: else an
// infected file could be read through its plain name because it also has
// an excluded one.
func (n *Node) excluded() bool {
	n.fsys.treeMu.Lock()
	var paths []string
	for _, l := range n.links {
		if p, ok := l.parent.relPathLocked(); ok {
			paths = append(paths, path.Join(p, l.name))
		}
	}
	n.fsys.treeMu.Unlock()
	for _, p := range paths {
		if !n.fsys.opts.Exclude(p) {
			return false
		}
	}
	return len(paths) > 0
}

// Create makes and opens a new file owned by the caller. A new file is
// empty and needs no scan; if the name already existed (made behind the
// kernel's back) the gate judges it like any open.
func (n *Node) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fusefs.Node, fusefs.Handle, error) {
	if err := n.writable(); err != nil {
		return nil, nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, nil, errno(err)
	}
	defer release()
	flags := backingFlags(req.Flags)
	created := true
	var fd int
	err = n.fsys.retryFull(func() (err error) {
		fd, err = unix.Openat(dirfd, req.Name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, unixMode(req.Mode)&^setID)
		return err
	})
	if err == syscall.EEXIST && req.Flags&fuse.OpenFlags(unix.O_EXCL) == 0 {
		// Made behind the kernel's back: open what is there, if it
		// is a regular file (else the kernel looks it up and retries).
		created = false
		fd, err = openRegular(dirfd, req.Name, flags, nil)
	}
	if err != nil {
		return nil, nil, errno(err)
	}
	if created {
		if err := n.fsys.ownNew(dirfd, req.Name, &req.Header, unixMode(req.Mode)); err != nil {
			unix.Close(fd)
			unix.Unlinkat(dirfd, req.Name, 0)
			return nil, nil, errno(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, errno(err)
	}
	child := n.fsys.node(dirfd, &st, n, req.Name)
	if !created && flags&unix.O_TRUNC != 0 {
		child.modified()
	}
	fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	resp.EntryValid = n.fsys.entryValid(n)
	h, err := child.gate(ctx, fd, flags, &req.Header, &resp.OpenResponse, dirfd, req.Name)
	if err != nil {
		return nil, nil, err
	}
	return child, h, nil
}

// openRegular opens name in dirfd with flags, never following a symlink
// (but for AT_FDCWD, then name is a descriptor's /proc link) and never
// blocking: a FIFO swapped in behind the kernel's back would
// block a plain open for reading until a writer came. It returns the
// descriptor only if it is a regular file and, when want is not nil, the
// inode want names, since the name may have changed after the caller
// looked it up; otherwise ESTALE, on which the kernel looks the path up
// again and retries once.
func openRegular(dirfd int, name string, flags int, want *inoKey) (int, error) {
	nofollow := unix.O_NOFOLLOW
	if dirfd == unix.AT_FDCWD {
		nofollow = 0 // name is a /proc/self/fd link to the very inode
	}
	fd, err := unix.Openat(dirfd, name, flags|nofollow|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	if err == nil && (st.Mode&unix.S_IFMT != unix.S_IFREG || (want != nil && (inoKey{st.Dev, st.Ino}) != *want)) {
		err = syscall.ESTALE
	}
	if err == nil && flags&unix.O_NONBLOCK == 0 {
		var fl int
		if fl, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
			_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// backingFlags are the open flags clamfuse uses on the backing file: the
// caller's, less creation flags (handled apart) and O_DIRECT (the kernel
// already bypasses its cache for such opens; our buffers are not aligned).
func backingFlags(f fuse.OpenFlags) int {
	return int(f) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_DIRECT)
}
