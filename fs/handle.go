package fs

import (
	"context"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Handle is an open file: reads and writes go to the descriptor the gate
// judged, never to a new open of the path.
type Handle struct {
	node     *Node
	f        *os.File
	readable bool
	writable bool
	who      cache.Opener
	wrote    atomic.Bool       // a write (or fallocate) went through this handle; see modified
	tgid     atomic.Int32      // the opener's process, 0 until read (see process), -1 if unknown
	sum      uint64            // digest of the contents judged at the open, 0 if not verified (served.go)
	size     int64             // size of the contents judged, with sum
	served   served            // the check of the bytes served against sum
	judged   *fuse.StoreBuffer // the contents the open's own scan judged, until it is decided (Hold)

	backingID int32 // the passthrough backing file of the open, shared by every handle of the node, or 0; see passthrough.go
}

var (
	_ fusefs.HandleReader     = (*Handle)(nil)
	_ fusefs.HandleWriter     = (*Handle)(nil)
	_ fusefs.HandleReleaser   = (*Handle)(nil)
	_ fusefs.HandleFlusher    = (*Handle)(nil)
	_ fusefs.HandleFAllocater = (*Handle)(nil)
)

// Read reads from the judged descriptor.
func (h *Handle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	buf := resp.Data[:0]
	if cap(buf) < req.Size {
		buf = make([]byte, req.Size)
	}
	buf = buf[:req.Size]
	h.readStarts()
	k, err := h.f.ReadAt(buf, req.Offset)
	if err == io.EOF {
		err = nil
	}
	h.servedBytes(req.Offset, buf[:k], err)
	if err != nil {
		return errno(err)
	}
	resp.Data = buf[:k]
	return nil
}

// Write writes through to the backing file.
func (h *Handle) Write(ctx context.Context, req *fuse.WriteRequest, resp *fuse.WriteResponse) error {
	var k int
	err := h.node.fsys.retryFull(func() (err error) {
		k, err = unix.Pwrite(int(h.f.Fd()), req.Data, req.Offset)
		return err
	})
	if err != nil {
		return errno(err)
	}
	resp.Size = k
	h.modified()
	return nil
}

// modified says that a change through h reached the file: every verdict
// of the file is stale from now on, a background scan of it still
// running is cancelled (its verdict would be about a state that is
// gone), and the last writer's close starts a new one.
func (h *Handle) modified() {
	if !h.wrote.Load() {
		h.wrote.Store(true)
	}
	h.node.modified()
}

// Flush is called on close(2). Writes go straight to the backing file and
// clamfuse keeps no locks of its own, so there is nothing to flush: ENOSYS
// tells the kernel never to send FLUSH again, which saves a round trip on
// every close.
func (h *Handle) Flush(ctx context.Context, req *fuse.FlushRequest) error {
	return errno(syscall.ENOSYS)
}

// Release closes the descriptor when the last reference goes.
// When the last writer of a file written through the mount closes it,
// the file is judged in the background, so a download is already judged
// (and an infected one logged) when someone opens it.
func (h *Handle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	defer h.node.fsys.quota.give(h.who.Uid, 1)
	if h.writable && h.backingID != 0 {
		// Its writes, unseen, reached the file before the kernel
		// released the open: verdicts made while it was open are stale.
		h.modified()
	}
	h.servedClose()
	last, closeID := h.node.dropHandle(h)
	h.endPassthrough(req.Conn, closeID)
	if last && !h.node.excluded() {
		h.node.fsys.opts.Gate.Prescan(h.f, h.who, h.node.fsys)
	}
	return errno(h.f.Close())
}

// FAllocate reserves or punches space; that is a write, as far as the
// verdicts are concerned, even when it fails (it may have done part).
func (h *Handle) FAllocate(ctx context.Context, req *fuse.FAllocateRequest) error {
	err := unix.Fallocate(int(h.f.Fd()), uint32(req.Mode), int64(req.Offset), int64(req.Length))
	h.modified()
	return errno(err)
}

var _ cache.Reopener = (*FS)(nil)

// ReopenWritten opens the file dev, ino again for reading, as clamfuse,
// for a scan after a write that waited for its turn (cache.Reopener):
// only a regular file the kernel still knows (its node), with a link
// left, not excluded; through one of its names opened O_PATH beneath its
// parent's descriptor and checked to be that inode (Node.inode), then
// opened for reading through that very descriptor, with O_NOATIME as
// the prewarm walk does. The file's name is its path, for the log.
func (f *FS) ReopenWritten(dev, ino uint64) (*os.File, error) {
	f.treeMu.Lock()
	n := f.nodes.get(inoKey{dev, ino})
	f.treeMu.Unlock()
	if n == nil || n.typ != unix.S_IFREG {
		return nil, syscall.ENOENT
	}
	pfd, st, err := n.inode()
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	if st.Nlink == 0 {
		return nil, syscall.ENOENT // unlinked: no one can open it by name any more
	}
	if n.excluded() {
		return nil, syscall.EPERM
	}
	fd, err := openOwn(pfd, &n.id)
	if err != nil {
		return nil, err
	}
	return osFile(fd, n.RelPath()), nil
}

// openOwn opens the regular file open as pfd (O_PATH), which must be the
// inode id, for reading, as clamfuse, for the gate's own use: with
// O_NOATIME where allowed, as the prewarm walk does.
func openOwn(pfd int, id *inoKey) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOATIME
	fd, err := unix.Open(procPath(pfd), flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == syscall.EPERM {
		flags = unix.O_RDONLY
		fd, err = unix.Open(procPath(pfd), flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, err
	}
	return checkRegular(fd, flags, id, nil)
}
