package fs

import (
	"context"
	"encoding/binary"
	"io"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Directory listings are streamed. A directory handle keeps its backing
// descriptor and the position it stands at, never the listing: each
// READDIR request reads the entries it returns from the backing directory
// with getdents, and gives the kernel the backing filesystem's own d_off
// cookies as offsets. The kernel asks for the next batch at the cookie of
// the last entry it used, telldir(3) returns such a cookie, and seekdir(3)
// and rewinddir(3) come as a request at that cookie or at 0: the handle
// seeks its descriptor there, so they work exactly as on the backing
// filesystem, whatever the directory's size. Memory per open directory is
// constant (the handle, and a pooled buffer while a request is served);
// each handle used to hold its whole listing, which let 150 handles on a
// directory of 20 000 long names take 1.27 GB.
//
// bazil's fusefs serves a READDIR (a ReadRequest with Dir set) from
// HandleReadDirAller when a handle has it, keeping that whole listing per
// handle and treating offsets as byte positions in it; dirHandle has no
// ReadDirAll, so fusefs passes every request, offset and size as the
// kernel sent them, to its Read.

// dirHandle is an open directory.
type dirHandle struct {
	fsys *FS
	uid  uint32 // whose quota it counts against

	mu   sync.Mutex // serialises requests on the handle; guards the descriptor's position, pos and kept
	fd   int
	pos  int64  // the cookie fd stands at: 0 when opened, -1 when unknown
	kept []byte // the last reply, while the kernel may ask for its tail again (see keep)
}

var (
	_ fusefs.HandleReader   = (*dirHandle)(nil)
	_ fusefs.HandleReleaser = (*dirHandle)(nil)
)

// newDirHandle wraps fd, a directory just opened for uid, which it owns.
func newDirHandle(fsys *FS, fd int, uid uint32) *dirHandle {
	return &dirHandle{fsys: fsys, uid: uid, fd: fd}
}

// direntBufSize is the size of the pooled getdents buffers; a request
// larger than what one fills takes several getdents calls.
const direntBufSize = 16 << 10

var direntBufs = sync.Pool{New: func() any { return new([direntBufSize]byte) }}

// minGetdents is the smallest buffer worth a getdents call: one entry
// with a 255-byte name needs 280 bytes.
const minGetdents = 512

// Read serves one READDIR: the entries from the cookie req.Offset on,
// as many as fit in req.Size bytes of FUSE dirents; none at the end.
func (d *dirHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	if !req.Dir {
		return errno(syscall.EISDIR)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := resp.Data[:0]
	if cap(out) < req.Size {
		out = make([]byte, 0, req.Size)
	}
	switch rest := d.keptAfter(req.Offset); {
	case req.Offset == d.pos && req.Offset != 0:
		// Where the last request ended: read on.
	case rest != nil:
		// Within the last reply: the kernel used only the entries that
		// fit the caller's buffer. Serve the others again, then read on.
		var all bool
		if out, all = appendWhole(out, rest, req.Size); !all {
			resp.Data = out
			return nil
		}
	default:
		// Anywhere else: a seekdir, or 0 for the start or a rewind,
		// which reads the directory afresh.
		d.dropKept()
		if _, err := unix.Seek(d.fd, req.Offset, io.SeekStart); err != nil {
			d.pos = -1
			return errno(err)
		}
		d.pos = req.Offset
	}
	buf := direntBufs.Get().(*[direntBufSize]byte)
	defer direntBufs.Put(buf)
	for {
		// A FUSE dirent is at most 4/3 the size of the getdents
		// record of the same entry (ALIGN8(24+len) against
		// ALIGN8(20+len), and a record is at least 24 bytes): what
		// getdents returns into 3/4 of the room left always fits, so
		// the descriptor never moves past an entry not served.
		room := (req.Size - len(out)) * 3 / 4
		if room > direntBufSize {
			room = direntBufSize
		}
		if room < minGetdents && len(out) > 0 {
			break
		}
		k, err := getdents(d.fd, buf[:max(room, minGetdents)])
		if err != nil {
			d.pos = -1
			if len(out) > 0 {
				break // the entries so far; the error comes again
			}
			d.dropKept()
			return errno(err)
		}
		if k == 0 {
			break // the end
		}
		var full bool
		out, full = d.appendDirents(out, buf[:k], req.Size)
		if full && len(out) == 0 {
			return errno(syscall.EINVAL) // as getdents into a buffer too small for one entry
		}
		if full {
			break
		}
	}
	d.keep(out)
	resp.Data = out
	return nil
}

// A reply of at most keptReplyMax bytes is kept until the next request,
// while all handles keep less than keptBudget bytes in all: the kernel
// asks for a page of entries at least, and when the caller's getdents
// buffer is smaller it uses the entries that fit and asks again at the
// cookie of the last one it used. Serving the rest from the kept reply
// saves a seek and a second read of the same entries.
const (
	keptReplyMax = 4096
	keptBudget   = 16 << 20
)

// keep keeps out, the reply about to be sent, if the budget allows.
func (d *dirHandle) keep(out []byte) {
	d.dropKept()
	if d.pos < 0 || len(out) == 0 || cap(out) > keptReplyMax {
		return
	}
	if d.fsys.kept.Add(int64(cap(out))) > keptBudget {
		d.fsys.kept.Add(-int64(cap(out)))
		return
	}
	d.kept = out
}

func (d *dirHandle) dropKept() {
	if d.kept != nil {
		d.fsys.kept.Add(-int64(cap(d.kept)))
		d.kept = nil
	}
}

// keptAfter returns the dirents of the kept reply after the one whose
// cookie is off, or nil when there is none such.
func (d *dirHandle) keptAfter(off int64) []byte {
	if d.pos < 0 || off == 0 {
		return nil
	}
	for b := d.kept; len(b) >= 24; {
		rec := (24 + int(binary.NativeEndian.Uint32(b[16:20])) + 7) &^ 7
		if int64(binary.NativeEndian.Uint64(b[8:16])) == off {
			if len(b[rec:]) == 0 {
				return nil
			}
			return b[rec:]
		}
		b = b[rec:]
	}
	return nil
}

// appendWhole appends the whole dirents of b that fit in size bytes in
// all to out, and reports whether all of b did.
func appendWhole(out, b []byte, size int) (_ []byte, all bool) {
	n := 0
	for n < len(b) {
		rec := (24 + int(binary.NativeEndian.Uint32(b[n+16:n+20])) + 7) &^ 7
		if len(out)+n+rec > size {
			break
		}
		n += rec
	}
	return append(out, b[:n]...), n == len(b)
}

// appendDirents encodes the linux_dirent64 records of b as FUSE dirents
// onto out, up to size bytes in all, and records in d.pos the cookie
// after the last one. full reports that one did not fit: the descriptor
// then stands past entries not served, and the next request seeks.
func (d *dirHandle) appendDirents(out, b []byte, size int) (_ []byte, full bool) {
	for len(b) >= 19 {
		// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
		ino := binary.NativeEndian.Uint64(b[0:8])
		off := binary.NativeEndian.Uint64(b[8:16])
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		typ := b[18]
		name := b[19:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		b = b[reclen:]
		// struct fuse_dirent { u64 ino; u64 off; u32 namelen; u32 type; char name[]; }, 8-aligned
		rec := (24 + len(name) + 7) &^ 7
		if len(out)+rec > size {
			d.pos = -1
			return out, true
		}
		out = binary.NativeEndian.AppendUint64(out, ino)
		out = binary.NativeEndian.AppendUint64(out, off)
		out = binary.NativeEndian.AppendUint32(out, uint32(len(name)))
		out = binary.NativeEndian.AppendUint32(out, uint32(typ))
		out = append(out, name...)
		for range rec - 24 - len(name) {
			out = append(out, 0)
		}
		d.pos = int64(off)
	}
	return out, false
}

// getdents reads directory entries of fd into buf, retrying on EINTR.
func getdents(fd int, buf []byte) (int, error) {
	for {
		k, err := unix.Getdents(fd, buf)
		if err != unix.EINTR {
			return k, err
		}
	}
}

// Release closes the descriptor and returns its share of the caller's
// quota.
func (d *dirHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	defer d.fsys.quota.give(d.uid, 1)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropKept()
	return errno(unix.Close(d.fd))
}
