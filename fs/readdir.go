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
// constant (the handle, at most one small reply kept, and a pooled
// buffer while a request is served); each handle used to hold its whole
// listing, which let 150 handles on a directory of 20 000 long names take
// 1.27 GB.
//
// fusefs serves READDIR (and READDIRPLUS) from a HandleReadDirPluser at
// the offsets it gives, sending the entries that fit the request: the
// handle returns only entries that fit, so that its descriptor never
// stands past an entry the kernel was not sent. It returns entries without
// their nodes, which a READDIRPLUS then adds (readdirplus.go).

// dirHandle is an open directory.
type dirHandle struct {
	fsys *FS
	uid  uint32 // whose quota it counts against

	mu   sync.Mutex // serialises requests on the handle; guards the descriptor's position, pos and kept
	fd   int
	pos  int64  // the cookie fd stands at: 0 when opened, -1 when unknown
	kept []byte // getdents records of the last reply, while the kernel may ask for its tail again (see keep)
}

var (
	_ fusefs.HandleReadDirPluser = (*dirHandle)(nil)
	_ fusefs.HandleReleaser      = (*dirHandle)(nil)
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

// A linux_dirent64 record is at least 24 bytes (ALIGN8(20+len)); the
// reply's record of the same entry, ALIGN8(header+len), is at most
// size("x")/24 times that. So getdents into room*24/size("x") bytes
// returns only entries that fit in room.
const minRecord = 24

// ReadDirPlus returns the entries from the cookie req.Offset on, as many
// as fit in req.Size bytes of READDIR (or READDIRPLUS) reply; none at the
// end.
func (d *dirHandle) ReadDirPlus(ctx context.Context, req fusefs.DirRead) ([]fusefs.DirentPlus, error) {
	size := fuse.DirentSize
	if req.Plus {
		size = fuse.DirentPlusSize
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ents, err := d.list(req, size)
	if err == nil && req.Plus && d.fsys.opts.ReaddirPlus != ReaddirPlusOff {
		d.addNodes(req, ents)
	}
	return ents, err
}

// list is ReadDirPlus without the nodes; d.mu is held.
func (d *dirHandle) list(req fusefs.DirRead, size func(string) int) ([]fusefs.DirentPlus, error) {
	r := reply{size: size, room: req.Size, collect: req.Size <= keptReplyMax}
	switch rest := d.keptAfter(req.Offset); {
	case req.Offset == d.pos && req.Offset != 0:
		// Where the last request ended: read on.
	case rest != nil:
		// Within the last reply: the kernel used only the entries that
		// fit the caller's buffer. Serve the others again, then read on.
		if !r.add(rest) {
			return r.ents, nil
		}
	default:
		// Anywhere else: a seekdir, or 0 for the start or a rewind,
		// which reads the directory afresh.
		d.dropKept()
		if _, err := unix.Seek(d.fd, req.Offset, io.SeekStart); err != nil {
			d.pos = -1
			return nil, errno(err)
		}
		d.pos = req.Offset
	}
	buf := direntBufs.Get().(*[direntBufSize]byte)
	defer direntBufs.Put(buf)
	perRecord := size("x")
	for {
		n := min(r.room*minRecord/perRecord, direntBufSize)
		if n < minGetdents && len(r.ents) > 0 {
			break
		}
		k, err := getdents(d.fd, buf[:max(n, minGetdents)])
		if err != nil {
			d.pos = -1
			if len(r.ents) > 0 {
				break // the entries so far; the error comes again
			}
			d.dropKept()
			return nil, errno(err)
		}
		if k == 0 {
			break // the end
		}
		all := r.add(buf[:k])
		if r.last != 0 {
			d.pos = r.last
		}
		if !all {
			// Only with the smallest buffer: the descriptor stands
			// past entries not sent.
			if len(r.ents) == 0 {
				return nil, errno(syscall.EINVAL) // as getdents into a buffer too small for one entry
			}
			d.pos = -1
			break
		}
	}
	d.keep(r.records)
	return r.ents, nil
}

// reply is a READDIR reply being made.
type reply struct {
	size    func(name string) int // bytes of an entry in the reply
	room    int                   // bytes left
	ents    []fusefs.DirentPlus
	collect bool   // whether to collect records (for keep)
	records []byte // the getdents records of ents
	last    int64  // the cookie after the last entry added
}

// add adds the entries of the getdents records b while they fit, and
// reports whether all did.
func (r *reply) add(b []byte) bool {
	for len(b) >= 19 {
		// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		nb := b[19:reclen]
		for i, c := range nb {
			if c == 0 {
				nb = nb[:i]
				break
			}
		}
		name := string(nb)
		sz := r.size(name)
		if sz > r.room {
			return false
		}
		r.room -= sz
		off := binary.NativeEndian.Uint64(b[8:16])
		r.ents = append(r.ents, fusefs.DirentPlus{
			Dirent: fuse.Dirent{Inode: binary.NativeEndian.Uint64(b[0:8]), Type: fuse.DirentType(b[18]), Name: name},
			Offset: off,
		})
		if r.collect {
			r.records = append(r.records, b[:reclen]...)
		}
		r.last = int64(off)
		b = b[reclen:]
	}
	return true
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

// A reply of at most keptReplyMax bytes of getdents records is kept
// until the next request, while all handles keep less than keptBudget
// bytes in all: the kernel asks for a page of entries at least, and when
// the caller's getdents buffer is smaller it uses the entries that fit
// and asks again at the cookie of the last one it used. Serving the rest
// from the kept reply saves a seek and a second read of the same entries.
const (
	keptReplyMax = 4096
	keptBudget   = 16 << 20
)

// keep keeps the records of the reply about to be sent, if the budget
// allows.
func (d *dirHandle) keep(records []byte) {
	d.dropKept()
	if d.pos < 0 || len(records) == 0 || len(records) > keptReplyMax {
		return
	}
	if d.fsys.kept.Add(int64(len(records))) > keptBudget {
		d.fsys.kept.Add(-int64(len(records)))
		return
	}
	d.kept = records
}

func (d *dirHandle) dropKept() {
	if d.kept != nil {
		d.fsys.kept.Add(-int64(len(d.kept)))
		d.kept = nil
	}
}

// keptAfter returns the records of the kept reply after the one whose
// cookie is off, or nil when there is none such.
func (d *dirHandle) keptAfter(off int64) []byte {
	if d.pos < 0 || off == 0 {
		return nil
	}
	for b := d.kept; len(b) >= 19; {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			return nil
		}
		if int64(binary.NativeEndian.Uint64(b[8:16])) == off {
			if len(b) == reclen {
				return nil
			}
			return b[reclen:]
		}
		b = b[reclen:]
	}
	return nil
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
