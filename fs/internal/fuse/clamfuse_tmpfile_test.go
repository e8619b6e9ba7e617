package fuse

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestTmpfileRequest decodes a TMPFILE (fuse_create_in: flags, mode,
// umask, open_flags; the name) and checks its reply is a CREATE's.
func TestTmpfileRequest(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 40}, 0)
	k.send(opTmpfile, 40, 3, u32s(unix.O_TMPFILE|unix.O_RDWR, unix.S_IFREG|0o600, 0o077, uint32(OpenKillSUIDGID)), cstr("/"))
	req, err := c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	r, ok := req.(*TmpfileRequest)
	if !ok {
		t.Fatalf("got %T %v, want a TmpfileRequest", req, req)
	}
	if r.Node != 3 || r.Name != "/" || r.Flags != OpenFlags(unix.O_TMPFILE|unix.O_RDWR) || r.Mode != 0o600 || r.Umask != 0o077 || r.OpenFlags != OpenKillSUIDGID {
		t.Errorf("decoded %v (open flags %v)", r, r.OpenFlags)
	}
	r.Respond(&CreateResponse{
		LookupResponse: LookupResponse{Node: 11, Attr: Attr{Inode: 11, Mode: 0o600}},
		OpenResponse:   OpenResponse{Handle: 4},
	})
	_, body := k.reply(40)
	if len(body) != 128+16 || le.Uint64(body[0:]) != 11 || le.Uint64(body[128:]) != 4 {
		t.Errorf("reply of %d bytes: nodeid %d, fh %d; want 144 bytes, 11, 4", len(body), le.Uint64(body[0:]), le.Uint64(body[128:]))
	}

	k.send(opTmpfile, 41, 3, u32s(unix.O_TMPFILE|unix.O_RDWR, 0o600, 0o077, 0), []byte("/")) // no NUL
	if req, err := c.ReadRequest(); err == nil {
		t.Errorf("a TMPFILE without a NUL-terminated name decoded as %v", req)
	}
}
