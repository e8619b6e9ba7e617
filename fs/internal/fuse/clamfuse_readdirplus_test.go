package fuse

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadDirPlusRequest decodes a READDIRPLUS (fuse_read_in) and checks
// the reply is the entries as given.
func TestReadDirPlusRequest(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 40}, InitDoReaddirplus)
	// fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding.
	in := append(u64s(3, 77), u32s(4096, 0)...)
	in = append(in, u64s(0)...)
	in = append(in, u32s(uint32(syscall.O_RDONLY|syscall.O_DIRECTORY), 0)...)
	k.send(opReadDirPlus, 20, 1, in)
	req, err := c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	r, ok := req.(*ReadDirPlusRequest)
	if !ok {
		t.Fatalf("got %T %v, want a ReadDirPlusRequest", req, req)
	}
	if r.Handle != 3 || r.Offset != 77 || r.Size != 4096 || r.Node != 1 || r.FileFlags != OpenFlags(syscall.O_RDONLY|syscall.O_DIRECTORY) {
		t.Errorf("decoded %v", r)
	}
	data := AppendDirentPlus(nil, c.proto, DirentPlus{Dirent: Dirent{Inode: 5, Type: DT_File, Name: "x"}, Offset: 1})
	r.Respond(&ReadDirPlusResponse{Data: data})
	if _, body := k.reply(20); string(body) != string(data) {
		t.Errorf("reply of %d bytes, want the %d given", len(body), len(data))
	}

	// A READDIRPLUS too short for fuse_read_in is refused.
	k.send(opReadDirPlus, 21, 1, u64s(3))
	if req, err := c.ReadRequest(); err == nil {
		t.Errorf("a short READDIRPLUS decoded as %v", req)
	}
}

// TestAppendDirentPlus checks struct fuse_direntplus: fuse_entry_out (128
// bytes) then fuse_dirent (ino, off, namelen, type, name), padded to 8.
func TestAppendDirentPlus(t *testing.T) {
	mtime := time.Unix(1700000000, 123)
	e := DirentPlus{
		Dirent: Dirent{Inode: 42, Type: DT_Dir, Name: "subdir"},
		Offset: 3,
		Entry: LookupResponse{
			Node: 7, Generation: 9, EntryValid: 1500 * time.Millisecond,
			Attr: Attr{Valid: 2 * time.Second, Inode: 42, Size: 4096, Mode: os.ModeDir | 0o750, Nlink: 2, Uid: 10, Gid: 20, Mtime: mtime},
		},
	}
	data := AppendDirentPlus([]byte("prefix.."), Protocol{7, 40}, e)
	b := data[8:]
	if len(b) != 128+24+8 || DirentPlusSize("subdir") != len(b) {
		t.Fatalf("entry of %d bytes (DirentPlusSize %d), want 160", len(b), DirentPlusSize("subdir"))
	}
	for _, f := range []struct {
		name      string
		off, size int
		want      uint64
	}{
		{"nodeid", 0, 8, 7},
		{"generation", 8, 8, 9},
		{"entry_valid", 16, 8, 1},
		{"attr_valid", 24, 8, 2},
		{"entry_valid_nsec", 32, 4, 500000000},
		{"attr_valid_nsec", 36, 4, 0},
		{"attr.ino", 40, 8, 42},
		{"attr.size", 48, 8, 4096},
		{"attr.mtime", 40 + 32, 8, 1700000000},
		{"attr.mtimensec", 40 + 52, 4, 123},
		{"attr.mode", 40 + 60, 4, 0o40750},
		{"attr.nlink", 40 + 64, 4, 2},
		{"attr.uid", 40 + 68, 4, 10},
		{"attr.gid", 40 + 72, 4, 20},
		{"dirent.ino", 128, 8, 42},
		{"dirent.off", 136, 8, 3},
		{"dirent.namelen", 144, 4, 6},
		{"dirent.type", 148, 4, 4}, // DT_DIR
	} {
		var got uint64
		if f.size == 8 {
			got = le.Uint64(b[f.off:])
		} else {
			got = uint64(le.Uint32(b[f.off:]))
		}
		if got != f.want {
			t.Errorf("%s = %d, want %d", f.name, got, f.want)
		}
	}
	if name := string(b[152:160]); name != "subdir\x00\x00" {
		t.Errorf("name and padding %q", name)
	}

	// Entries follow each other, each padded to 8 bytes.
	var all []byte
	for _, n := range []string{"a", "bbbbbbbb", strings.Repeat("c", 255)} {
		before := len(all)
		all = AppendDirentPlus(all, Protocol{7, 40}, DirentPlus{Dirent: Dirent{Name: n}})
		if len(all)-before != DirentPlusSize(n) || len(all)%8 != 0 {
			t.Errorf("%q: %d bytes, DirentPlusSize %d", n, len(all)-before, DirentPlusSize(n))
		}
	}
}

// TestAppendDirentAt checks struct fuse_dirent with a given offset, and
// that without one AppendDirent lays entries out the same way.
func TestAppendDirentAt(t *testing.T) {
	d := Dirent{Inode: 12, Type: DT_Link, Name: "link"}
	b := AppendDirentAt(nil, d, 99)
	if len(b) != 32 || DirentSize("link") != 32 {
		t.Fatalf("%d bytes (DirentSize %d), want 32", len(b), DirentSize("link"))
	}
	if le.Uint64(b[0:]) != 12 || le.Uint64(b[8:]) != 99 || le.Uint32(b[16:]) != 4 || le.Uint32(b[20:]) != 10 || string(b[24:]) != "link\x00\x00\x00\x00" {
		t.Errorf("fuse_dirent % x", b)
	}
	prev := AppendDirent([]byte("12345678"), d)
	if at := AppendDirentAt([]byte("12345678"), d, 8+32); string(at) != string(prev) {
		t.Errorf("AppendDirentAt % x\nAppendDirent   % x", at, prev)
	}
}
