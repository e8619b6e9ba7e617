package fs

import (
	"context"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// O_TMPFILE: an unnamed file made in a directory, as the caller, who must
// be allowed to write to the directory; owned by the caller, with the
// caller's umask applied as for a file created by name (newMode). Its node
// has no name: requests about it act on its open handle's descriptor
// (Node.unnamedFD), a LINK (linkat(2) of its descriptor) gives it one,
// as the caller (Link), unless it was made with O_EXCL.
//
// It is judged as any file is: its handle is opened through the gate as
// a created one is (an empty file, written by its own caller); every
// write through it makes the node's verdicts stale (Node.modified), its
// last writer's release has it scanned in the background, and an open
// for reading after it was named is decided by a scan of what it holds
// then (by a fresh one while it is still open for writing, writers.go).

var _ fusefs.NodeTmpfiler = (*Node)(nil)

// Tmpfile makes and opens an unnamed file in the directory n, within the
// caller's share of descriptors (see quota).
func (n *Node) Tmpfile(ctx context.Context, req *fuse.TmpfileRequest, resp *fuse.CreateResponse) (fusefs.Node, fusefs.Handle, error) {
	if err := n.fsys.quota.take(req.Uid, req.Pid); err != nil {
		return nil, nil, err
	}
	child, h, err := n.tmpfile(ctx, req, resp)
	n.fsys.quota.settle(req.Uid, err == nil)
	return child, h, err
}

func (n *Node) tmpfile(ctx context.Context, req *fuse.TmpfileRequest, resp *fuse.CreateResponse) (fusefs.Node, fusefs.Handle, error) {
	if err := n.writable(); err != nil {
		return nil, nil, errno(err)
	}
	if req.Flags&fuse.OpenFlags(unix.O_ACCMODE) == fuse.OpenReadOnly {
		return nil, nil, errno(syscall.EINVAL) // as open(2); the kernel checks first
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, nil, errno(err)
	}
	defer release()
	c := n.fsys.cred(&req.Header)
	// O_EXCL is kept: it makes the file one that can never be named.
	flags := int(req.Flags)&^(unix.O_CREAT|unix.O_NOCTTY|unix.O_DIRECT|unix.O_TRUNC) | unix.O_TMPFILE
	mode := newMode(dirfd, unixMode(req.Mode), unixMode(req.Umask))
	var fd int
	err = n.fsys.retryFull(func() (err error) {
		fd, err = caller.Openat(c, dirfd, ".", flags, mode)
		return err
	})
	if err != nil {
		return nil, nil, errno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = syscall.EIO
		}
		return nil, nil, errno(err)
	}
	child := n.fsys.unnamedNode(&st)
	fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	h, err := child.gate(ctx, fd, flags&^unix.O_TMPFILE, &req.Header, &resp.OpenResponse, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return child, h, nil
}
