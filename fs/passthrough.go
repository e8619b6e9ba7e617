package fs

import "github.com/clamfuse/clamfuse/fs/internal/fuse"

// FUSE passthrough (Linux 6.9 and later): the kernel reads and writes an
// open file's backing descriptor itself, no READ or WRITE reaching
// clamfuse. MountOptions.Passthrough asks the kernel for it; clamfuse
// does not use it for opens yet: with it the kernel keeps no page cache
// for the file, fails an open that would mix passthrough and cached
// opens of one inode, and writes bypass what the scan after a write
// learns from WRITE requests. Only tests turn it on, for read-only opens
// the gate allowed (Options.passthroughReads), to prove the pieces work.

// passthrough hands the reads of h, a read-only handle on a file the gate
// allowed, to the kernel: it registers h's descriptor, the one judged, as
// the backing file of the open in resp. When the kernel refuses (no
// passthrough granted), reads come to Read as before.
func (h *Handle) passthrough(conn *fuse.Conn, resp *fuse.OpenResponse) {
	id, err := conn.BackingOpen(int(h.f.Fd()))
	if err != nil {
		h.node.fsys.log.Debug("no passthrough", "path", h.who.Path, "err", err)
		return
	}
	h.backingID = id
	// The kernel refuses FOPEN_KEEP_CACHE with passthrough: it keeps no
	// page cache for the file.
	resp.Flags = resp.Flags&^fuse.OpenKeepCache | fuse.OpenPassthrough
	resp.BackingID = id
}

// endPassthrough drops the backing file registered for h, once the kernel
// has released the open that used it.
func (h *Handle) endPassthrough(conn *fuse.Conn) {
	if h.backingID == 0 {
		return
	}
	if err := conn.BackingClose(h.backingID); err != nil {
		h.node.fsys.log.Warn("closing a passthrough backing file", "path", h.who.Path, "err", err)
	}
	h.backingID = 0
}
