package fuse

// clamfuse: TMPFILE (protocol 7.37), open(2) with O_TMPFILE.

import (
	"bytes"
	"fmt"
	"os"
	"unsafe"
)

// opTmpfile is FUSE_TMPFILE.
const opTmpfile = 51

// A TmpfileRequest asks to create and open an unnamed file in the
// directory r.Node: open(2) of the directory with O_TMPFILE. The reply is
// a CREATE's: the new node, with a lookup counted as for CREATE, and the
// open handle; the node must be a regular file, else the kernel fails
// the open with EIO. Without O_EXCL in Flags the file may later be given
// a name (linkat(2), a LINK of its node). Since Linux 6.1 the kernel
// sends TMPFILE whatever the protocol; an ENOSYS reply makes it fail this
// and every later O_TMPFILE open with EOPNOTSUPP without asking.
type TmpfileRequest struct {
	Header `json:"-"`
	// Name is the name the kernel gives the file's dentry meanwhile ("/",
	// which no file can have).
	Name string
	// Flags are open(2)'s, O_TMPFILE (O_DIRECTORY|__O_TMPFILE) among them.
	Flags     OpenFlags
	OpenFlags OpenRequestFlags
	Mode      os.FileMode
	// Umask of the request.
	Umask os.FileMode
}

var _ Request = (*TmpfileRequest)(nil)

func (r *TmpfileRequest) String() string {
	return fmt.Sprintf("Tmpfile [%s] %q fl=%v mode=%v umask=%v", &r.Header, r.Name, r.Flags, r.Mode, r.Umask)
}

// Respond replies to the request with the given response, as to a
// CREATE.
func (r *TmpfileRequest) Respond(resp *CreateResponse) {
	c := CreateRequest{Header: r.Header}
	c.Respond(resp)
}

// createInExt is struct fuse_create_in as of 7.33 (upstream's createIn
// has open_flags as padding).
type createInExt struct {
	Flags     uint32
	Mode      uint32
	Umask     uint32
	OpenFlags uint32
}

// tmpfileRequest decodes a TMPFILE: fuse_create_in, then the name.
func tmpfileRequest(m *message) Request {
	in := (*createInExt)(m.data())
	if m.len() < unsafe.Sizeof(*in) {
		return nil
	}
	name := m.bytes()[unsafe.Sizeof(*in):]
	i := bytes.IndexByte(name, '\x00')
	if i < 0 {
		return nil
	}
	return &TmpfileRequest{
		Header:    m.Header(),
		Name:      string(name[:i]),
		Flags:     openFlags(in.Flags),
		OpenFlags: OpenRequestFlags(in.OpenFlags),
		Mode:      fileMode(in.Mode),
		Umask:     fileMode(in.Umask) & os.ModePerm,
	}
}
