package fuse

// clamfuse: FUSE passthrough's backing files (protocol 7.40).

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The OPEN reply flags upstream lacks.
const (
	// The file is a stream: no file position at all (FOPEN_STREAM).
	OpenStream OpenResponseFlags = 1 << 4
	// Do not FLUSH on close, unless with the writeback cache
	// (FOPEN_NOFLUSH, 7.35).
	OpenNoFlush OpenResponseFlags = 1 << 5
	// With OpenDirectIO, allow concurrent direct writes on the same
	// inode (FOPEN_PARALLEL_DIRECT_WRITES, 7.38).
	OpenParallelDirectWrites OpenResponseFlags = 1 << 6
	// The kernel reads and writes OpenResponse.BackingID itself
	// (FOPEN_PASSTHROUGH, 7.40). Only OpenDirectIO,
	// OpenParallelDirectWrites and OpenNoFlush may go with it (not
	// OpenKeepCache: the kernel fails the open with EIO). Nor may one
	// inode be open with and without passthrough (through the page
	// cache) at once: the kernel fails the open that would mix them.
	OpenPassthrough OpenResponseFlags = 1 << 7
)

// backingMap is struct fuse_backing_map.
type backingMap struct {
	Fd      int32
	Flags   uint32
	Padding uint64
}

// The ioctls on /dev/fuse for backing files: _IOW(229, 1, struct
// fuse_backing_map) and _IOW(229, 2, uint32_t).
const (
	devIocBackingOpen  = 0x4010e501
	devIocBackingClose = 0x4004e502
)

// BackingOpen registers the open regular file fd as a backing file of the
// connection and returns its id, for OpenResponse.BackingID with
// OpenPassthrough. The kernel holds its own reference to the file: fd may
// be closed at once. It fails with EPERM unless Features2 has
// InitPassthrough and the server has CAP_SYS_ADMIN (with ENOTTY on a
// kernel before 6.9, which has no such ioctl), and with ELOOP if the file
// is on a stacking file system as deep as the mount's stack depth (see
// Passthrough); on any error, serve the handle's READs and WRITEs.
//
// The id must stay registered until the kernel has taken it, that is
// until the Release of the handle it was given to (an OPEN reply is read
// by the opener after the server's write returns); then BackingClose.
func (c *Conn) BackingOpen(fd int) (int32, error) {
	m := backingMap{Fd: int32(fd)}
	c.wio.RLock()
	defer c.wio.RUnlock()
	id, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd()), devIocBackingOpen, uintptr(unsafe.Pointer(&m)))
	if errno != 0 {
		return 0, errno
	}
	return int32(id), nil
}

// BackingClose drops the connection's reference to the backing file id;
// files opened with it keep theirs.
func (c *Conn) BackingClose(id int32) error {
	c.wio.RLock()
	defer c.wio.RUnlock()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd()), devIocBackingClose, uintptr(unsafe.Pointer(&id)))
	if errno != 0 {
		return errno
	}
	return nil
}
