package fs

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// FUSE passthrough (Linux 6.9 and later; mount.passthrough = "auto").
//
// When the kernel granted it, an open the gate allowed registers the
// descriptor clamfuse opened and judged as the open's backing file
// (FUSE_DEV_IOC_BACKING_OPEN) and answers with its id: the kernel then
// reads, writes and maps that inode itself, no READ or WRITE reaching
// clamfuse, and keeps no FUSE page cache for it. The kernel opens its
// own file of the registered one's path (the same inode) for each open,
// with that open's flags, so what is served is the inode judged, as on
// the fallback path.
//
// The kernel's rule (fs/fuse/iomode.c, fuse_file_io_open): while an
// inode has opens in passthrough mode, every other open of it must be
// passthrough too, with the same backing file (else the kernel fails that
// open with EIO, FOPEN_DIRECT_IO or not: the inode holds one backing
// file); while it has opens in cached mode, a passthrough open fails with
// EIO. So the mode is per inode, decided under Node.hmu when a handle is
// registered: the first open of an idle inode registers its descriptor
// (unless it only reads a file under passthroughMinRead, or writes a
// set-ID file);
// every open while that inode has passthrough handles shares their
// backing id, whatever its flags (O_DIRECT, O_WRONLY, a later mmap); an
// open while the inode has cached handles (the kernel refused the backing
// file, or passthrough is off) is cached too. The kernel leaves a mode at
// its last release of the mode's opens, before it sends the RELEASE that
// makes clamfuse forget the handle, so clamfuse's view of an inode's
// opens is never behind the kernel's and a user's open flags cannot make
// another user's open fail. The backing id is closed when the last handle
// sharing it is released.
//
// The kernel reads and writes through a backing file with the
// credentials recorded when it was registered, for every open that
// shares it; clamfuse registers it as nobody (caller.AsNobody), so that
// no write through it keeps a set-user-ID bit or uses root's reserved
// blocks. Permissions were checked at each open, as its caller. Root
// keeps a set-ID bit when it writes a file natively: an open for writing
// of a file with one is not passthrough when it decides the mode (it is
// when the file has passthrough opens already; then, or if the bit is set
// while it is open, a write by root clears it: README, Passthrough).
//
// Writes no longer reach clamfuse one by one: an open for writing in
// passthrough mode makes every verdict of the inode stale at its open
// and again at its release, and counts as a write for the scan after the
// last writer's close (Handle.modified); while one is open, every open
// for reading is judged by a fresh scan (writers.go).

// passthroughLocked decides the mode of h, about to be registered in n,
// when the kernel granted passthrough: the backing id of n's passthrough
// handles, a new one for h's descriptor when n has no handle, or none
// (cached mode, today's path). n.hmu is held.
func (n *Node) passthroughLocked(h *Handle, conn *fuse.Conn) {
	for o := range n.handlesLocked().all() {
		// All handles of n share one mode: the first says which.
		h.backingID = o.backingID
		return
	}
	if !h.writable && h.size < passthroughMinRead {
		// A small file read only: the cached mode keeps the kernel's
		// page cache across opens (FOPEN_KEEP_CACHE), so a re-open
		// costs no READ either, and no backing file to register and
		// close (measured: about 40 µs of clamfuse's CPU per open).
		return
	}
	if h.writable && setID(h.f) {
		// A write through the backing file runs as nobody and clears
		// the set-user-ID and set-group-ID bits even for root, who
		// keeps them on the backing filesystem: a writer of such a file
		// is served by clamfuse (and the opens beside it), where the
		// kernel clears them as for the writer itself.
		return
	}
	var id int32
	err := caller.AsNobody(func() (err error) {
		id, err = conn.BackingOpen(int(h.f.Fd()))
		return err
	})
	if err != nil {
		n.fsys.noPassthrough(h.who.Path, err)
		return
	}
	h.backingID = id
}

// passthroughMinRead is the size from which an open for reading only
// decides passthrough for a file nobody has open.
const passthroughMinRead = 1 << 20

// setID reports whether f has a set-user-ID or set-group-ID bit.
func setID(f *os.File) bool {
	var st unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0
}

// noPassthrough logs, once for each reason, that an open falls back to
// being served by clamfuse.
func (f *FS) noPassthrough(path string, err error) {
	if _, seen := f.ptRefused.LoadOrStore(err.Error(), true); !seen {
		f.log.Debug("passthrough refused by the kernel: such opens are served by clamfuse", "path", path, "err", err)
	}
}

// passthroughOpen answers an open in passthrough mode: FOPEN_PASSTHROUGH
// with the backing id. The kernel refuses FOPEN_KEEP_CACHE with it, and
// the FUSE page cache of the inode is not the one this open fills: the
// next cached open must not keep it (served.go). An open for writing
// makes every verdict of the file stale now, before its first write.
func (h *Handle) passthroughOpen(resp *fuse.OpenResponse) {
	resp.Flags = resp.Flags&^fuse.OpenKeepCache | fuse.OpenPassthrough
	resp.BackingID = h.backingID
	h.node.dropKeepCache()
	if h.writable {
		h.modified()
	}
}

// endPassthrough closes backing id, once the kernel has released the last
// open that shared it.
func (h *Handle) endPassthrough(conn *fuse.Conn, id int32) {
	if id == 0 {
		return
	}
	if err := conn.BackingClose(id); err != nil {
		h.node.fsys.log.Warn("closing a passthrough backing file", "path", h.who.Path, "err", err)
	}
}

// writtenUnseen reports whether n has a handle open for writing in
// passthrough mode, whose writes clamfuse does not see.
func (n *Node) writtenUnseen() bool {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if n.writersLocked() == 0 {
		return false
	}
	for o := range n.handlesLocked().all() {
		if o.writable && o.backingID != 0 {
			return true
		}
	}
	return false
}
