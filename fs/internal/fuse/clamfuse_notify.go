package fuse

// clamfuse: notifications upstream lacks or gets wrong.

import (
	"syscall"
	"unsafe"
)

// InvalidateNodeAttr invalidates the kernel's cache of the attributes of
// a node, and its cached POSIX ACLs, but not its data: the notification
// with a negative offset. (InvalidateNode's documentation is wrong on
// Linux: offset 0 and size 0 invalidates all the data too, a size of 0
// or less meaning to the end.)
//
// Returns ErrNotCached if the kernel is not currently caching the node.
func (c *Conn) InvalidateNodeAttr(nodeID NodeID) error {
	return c.InvalidateNode(nodeID, -1, 0)
}

// notifyExpireOnly is FUSE_EXPIRE_ONLY, in fuse_notify_inval_entry_out's
// flags (7.38).
const notifyExpireOnly = 1 << 0

// notifyInvalEntryFlagsOut is struct fuse_notify_inval_entry_out as of
// 7.38 (upstream's notifyInvalEntryOut has flags as padding).
type notifyInvalEntryFlagsOut struct {
	Parent  uint64
	Namelen uint32
	Flags   uint32
}

// ExpireEntry marks the kernel's cached directory entry name in parent as
// expired, as if its EntryValid had run out: the next use of the name
// asks the server again (LOOKUP), but unlike InvalidateEntry the entry is
// not dropped at once, so what is mounted on it, or a process's working
// directory in it, stays put. It needs the kernel to offer
// InitHasExpireOnly (Linux 6.2, protocol 7.38), asked for with
// RequestInitFlags2; without it ExpireEntry fails with ENOSYS.
//
// Returns ErrNotCached if the kernel is not currently caching the entry.
func (c *Conn) ExpireEntry(parent NodeID, name string) error {
	if c.ext.flags2&InitHasExpireOnly == 0 {
		return syscall.ENOSYS
	}
	const maxUint32 = ^uint32(0)
	if uint64(len(name)) > uint64(maxUint32) {
		return syscall.ENAMETOOLONG
	}
	buf := newBuffer(unsafe.Sizeof(notifyInvalEntryFlagsOut{}) + uintptr(len(name)) + 1)
	h := (*outHeader)(unsafe.Pointer(&buf[0]))
	// h.Unique is 0
	h.Error = notifyCodeInvalEntry
	out := (*notifyInvalEntryFlagsOut)(buf.alloc(unsafe.Sizeof(notifyInvalEntryFlagsOut{})))
	out.Parent = uint64(parent)
	out.Namelen = uint32(len(name))
	out.Flags = notifyExpireOnly
	buf = append(buf, name...)
	buf = append(buf, '\x00')
	return c.sendNotify(buf)
}

// StoreBuffer is a FUSE_NOTIFY_STORE message being made: the bytes to
// store are read straight into it (Data), after the room for its
// headers, and it is sent as is, with no copy (NotifyStoreBuffer). It
// comes from the pool of READ replies (readBufs) and goes back there
// with Free.
type StoreBuffer struct {
	buf    buffer
	pooled *buffer
}

// storeHead is the room for the headers before the data.
const storeHead = outHeaderSize + unsafe.Sizeof(notifyStoreOut{})

// NewStoreBuffer returns a StoreBuffer for size bytes.
func NewStoreBuffer(size int) *StoreBuffer {
	buf, pooled := getReadBuf(size + int(unsafe.Sizeof(notifyStoreOut{})))
	buf = buf[:storeHead]
	clear(buf)
	return &StoreBuffer{buf: buf[:int(storeHead)+size], pooled: pooled}
}

// Data is where the bytes to store go: len is the size asked for.
func (b *StoreBuffer) Data() []byte { return b.buf[storeHead:] }

// Free gives the buffer back; b must not be used afterwards.
func (b *StoreBuffer) Free() {
	if p := b.pooled; p != nil {
		b.pooled, b.buf = nil, nil
		putReadBuf(p)
	}
}

// NotifyStoreBuffer puts b's data into the kernel's page cache of the
// node at offset, as NotifyStore does (the kernel extends its idea of
// the file's size to offset + len(data) if it is smaller).
//
// Returns ErrNotCached if the kernel is not currently caching the node.
func (c *Conn) NotifyStoreBuffer(nodeID NodeID, offset uint64, b *StoreBuffer) error {
	h := (*outHeader)(unsafe.Pointer(&b.buf[0]))
	// h.Unique is 0
	h.Error = notifyCodeStore
	out := (*notifyStoreOut)(unsafe.Pointer(&b.buf[outHeaderSize]))
	out.Nodeid = uint64(nodeID)
	out.Offset = offset
	out.Size = uint32(len(b.buf) - int(storeHead))
	return c.sendNotify(b.buf)
}
