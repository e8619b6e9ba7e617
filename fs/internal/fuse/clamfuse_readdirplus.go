package fuse

// clamfuse: READDIRPLUS (protocol 7.21), asked for with InitDoReaddirplus
// (and InitReaddirplusAuto).

import (
	"fmt"
	"time"
	"unsafe"
)

// A ReadDirPlusRequest asks to read directory entries from an open
// directory, each with the reply to a LOOKUP of its name: READDIR and
// LOOKUP in one. The kernel sends it instead of READDIR when
// InitDoReaddirplus was granted; with InitReaddirplusAuto too, only at the
// start of a listing and after lookups or stats of the directory's
// entries, and READDIR otherwise, even within one listing: the offsets of
// the two must agree.
//
// The reply is entries appended with AppendDirentPlus, as many whole ones
// as fit in Size, from the entry at Offset. Lookup counts: every entry sent
// with a nonzero Entry.Node counts as one LOOKUP of that node, to be
// undone by FORGET, except entries named "." and "..", which do not
// count (the kernel ignores their Entry); an entry with Entry.Node 0 is
// only listed. So a server counts the entries it sends, not those it
// prepared: what did not fit must not count.
type ReadDirPlusRequest struct {
	Header    `json:"-"`
	Handle    HandleID
	Offset    int64
	Size      int
	Flags     ReadFlags
	LockOwner LockOwner
	FileFlags OpenFlags
}

var _ Request = (*ReadDirPlusRequest)(nil)

func (r *ReadDirPlusRequest) String() string {
	return fmt.Sprintf("ReadDirPlus [%s] %v %d @%#x fl=%v owner=%v ffl=%v", &r.Header, r.Handle, r.Size, r.Offset, r.Flags, r.LockOwner, r.FileFlags)
}

// Respond replies to the request with the given response.
func (r *ReadDirPlusRequest) Respond(resp *ReadDirPlusResponse) {
	buf := newBuffer(uintptr(len(resp.Data)))
	buf = append(buf, resp.Data...)
	r.respond(buf)
}

// A ReadDirPlusResponse is the response to a ReadDirPlusRequest: entries
// appended with AppendDirentPlus.
type ReadDirPlusResponse struct {
	Data []byte
}

func (r *ReadDirPlusResponse) String() string {
	return fmt.Sprintf("ReadDirPlus %d", len(r.Data))
}

// readDirPlusRequest decodes a READDIRPLUS: fuse_read_in, as READDIR.
func readDirPlusRequest(c *Conn, m *message) Request {
	in := (*readIn)(m.data())
	if m.len() < readInSize(c.proto) {
		return nil
	}
	return &ReadDirPlusRequest{
		Header:    m.Header(),
		Handle:    HandleID(in.Fh),
		Offset:    int64(in.Offset),
		Size:      int(in.Size),
		Flags:     ReadFlags(in.ReadFlags),
		LockOwner: LockOwner(in.LockOwner),
		FileFlags: openFlags(in.Flags),
	}
}

// A DirentPlus is an entry of a READDIRPLUS reply (struct
// fuse_direntplus): a directory entry and the reply to a LOOKUP of its
// name (see ReadDirPlusRequest for how it counts).
type DirentPlus struct {
	Dirent
	// Offset is where the entry after this one is: the kernel's next
	// READDIRPLUS or READDIR of the listing asks from the Offset of the
	// last entry it took.
	Offset uint64
	// Entry is the LOOKUP reply; Entry.Node 0 for none.
	Entry LookupResponse
}

// direntPlusHeader is the size of fuse_direntplus before the name.
const direntPlusHeader = int(unsafe.Sizeof(entryOut{})) + direntSize

// DirentPlusSize returns the size of the encoded entry named name.
func DirentPlusSize(name string) int {
	return (direntPlusHeader + len(name) + 7) &^ 7
}

// AppendDirentPlus appends the encoded form of e, with its attributes as
// protocol proto has them, to data and returns the resulting slice. The
// kernel takes a name of 1 to 1024 bytes without '/', and fails the
// whole listing (EIO) on any other.
func AppendDirentPlus(data []byte, proto Protocol, e DirentPlus) []byte {
	start := len(data)
	data = append(data, make([]byte, DirentPlusSize(e.Name))...)
	out := (*entryOut)(unsafe.Pointer(&data[start]))
	out.Nodeid = uint64(e.Entry.Node)
	out.Generation = e.Entry.Generation
	out.EntryValid, out.EntryValidNsec = validTime(e.Entry.EntryValid)
	out.AttrValid, out.AttrValidNsec = validTime(e.Entry.Attr.Valid)
	e.Entry.Attr.attr(&out.Attr, proto)
	de := (*dirent)(unsafe.Pointer(&data[start+int(unsafe.Sizeof(entryOut{}))]))
	de.Ino = e.Inode
	de.Off = e.Offset
	de.Namelen = uint32(len(e.Name))
	de.Type = uint32(e.Type)
	copy(data[start+direntPlusHeader:], e.Name)
	return data
}

// validTime splits a cache timeout as the kernel takes it.
func validTime(d time.Duration) (sec uint64, nsec uint32) {
	return uint64(d / time.Second), uint32(d % time.Second / time.Nanosecond)
}

// DirentSize returns the size of the encoded READDIR entry named name.
func DirentSize(name string) int {
	return (direntSize + len(name) + 7) &^ 7
}

// AppendDirentAt appends the encoded form of a READDIR entry to data, as
// AppendDirent does, but with off as the offset of the entry after it
// (AppendDirent takes the end of data for that), and returns the
// resulting slice: for a listing served in pieces at offsets of its own,
// the same offsets as its AppendDirentPlus entries.
func AppendDirentAt(data []byte, dir Dirent, off uint64) []byte {
	start := len(data)
	data = append(data, make([]byte, DirentSize(dir.Name))...)
	de := (*dirent)(unsafe.Pointer(&data[start]))
	de.Ino = dir.Inode
	de.Off = off
	de.Namelen = uint32(len(dir.Name))
	de.Type = uint32(dir.Type)
	copy(data[start+direntSize:], dir.Name)
	return data
}
