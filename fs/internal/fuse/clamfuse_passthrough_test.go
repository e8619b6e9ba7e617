package fuse

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestInitReplyFlags2(t *testing.T) {
	tests := []struct {
		name      string
		minor     uint32
		flags     InitFlags
		flags2    uint32
		opts      []MountOption
		wantMinor uint32
		want2     InitFlags2
		wantDepth uint32
	}{
		{"6.18, passthrough", 45, kernel618Flags, kernel618Flags2, []MountOption{Passthrough(1)}, 40, InitPassthrough, 1},
		{"6.18, depth 2", 45, kernel618Flags, kernel618Flags2, []MountOption{Passthrough(2)}, 40, InitPassthrough, 2},
		{"6.18, not asked", 45, kernel618Flags, kernel618Flags2, nil, 40, 0, 0},
		{"6.18, with the writeback cache", 45, kernel618Flags, kernel618Flags2,
			[]MountOption{Passthrough(1), WritebackCache()}, 40, 0, 0},
		{"6.1 (Debian 12): no passthrough", 38, kernel61Flags, kernel61Flags2, []MountOption{Passthrough(1)}, 38, 0, 0},
		{"6.18 without CONFIG_FUSE_PASSTHROUGH", 45, kernel618Flags, kernel618Flags2 &^ uint32(InitPassthrough),
			[]MountOption{Passthrough(1)}, 40, 0, 0},
		{"5.10: no flags2 at all", 32, kernel61Flags &^ (InitInitExt | InitSetxattrExt | InitHandleKillPrivV2), 0,
			[]MountOption{Passthrough(1)}, 32, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, out := kernelInit(t, tt.minor, tt.flags, tt.flags2, tt.opts...)
			if out.minor != tt.wantMinor || c.Protocol() != (Protocol{7, tt.wantMinor}) {
				t.Errorf("protocol 7.%d (Conn %v), want 7.%d", out.minor, c.Protocol(), tt.wantMinor)
			}
			if InitFlags2(out.flags2) != tt.want2 || c.Features2() != tt.want2 {
				t.Errorf("flags2 %v, Features2 %v; want %v", InitFlags2(out.flags2), c.Features2(), tt.want2)
			}
			ext := InitFlags(out.flags)&InitInitExt != 0
			if ext != (tt.want2 != 0) || (c.Features()&InitInitExt != 0) != ext {
				t.Errorf("flags %v, Features %v: InitInitExt %v, want %v", InitFlags(out.flags), c.Features(), ext, tt.want2 != 0)
			}
			if out.maxStackDepth != tt.wantDepth {
				t.Errorf("max_stack_depth %d, want %d", out.maxStackDepth, tt.wantDepth)
			}
		})
	}
}

func TestPassthroughOption(t *testing.T) {
	for _, depth := range []int{-1, 0, 3} {
		conf := mountConfig{}
		if err := Passthrough(depth)(&conf); err == nil {
			t.Errorf("Passthrough(%d) accepted", depth)
		}
		if conf.ext != (mountExt{}) {
			t.Errorf("Passthrough(%d) changed the config after an error: %+v", depth, conf.ext)
		}
	}
}

// TestBackingIoctls checks the ioctl numbers against _IOW(229, nr, size)
// of include/uapi/linux/fuse.h.
func TestBackingIoctls(t *testing.T) {
	iow := func(nr, size uintptr) uintptr { return 1<<30 | size<<16 | 229<<8 | nr }
	if got, want := uintptr(devIocBackingOpen), iow(1, 16); got != want {
		t.Errorf("FUSE_DEV_IOC_BACKING_OPEN %#x, want %#x", got, want)
	}
	if got, want := uintptr(devIocBackingClose), iow(2, 4); got != want {
		t.Errorf("FUSE_DEV_IOC_BACKING_CLOSE %#x, want %#x", got, want)
	}
	var m backingMap
	if got := unsafeSizeof(m); got != 16 {
		t.Errorf("struct fuse_backing_map is %d bytes, want 16", got)
	}
}

// TestOpenReply checks fuse_open_out (fh, open_flags, backing_id) in the
// OPEN and CREATE replies.
func TestOpenReply(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 40}, 0)
	resp := OpenResponse{Handle: 0x1122334455, Flags: OpenPassthrough | OpenDirectIO, BackingID: 7}

	k.send(opOpen, 10, 5, u32s(uint32(os.O_RDONLY), 0))
	req, err := c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.(*OpenRequest).Respond(&resp)
	_, body := k.reply(10)
	checkOpenOut(t, "OPEN", body, resp)

	// fuse_create_in: flags, mode, umask, open_flags; then the name.
	k.send(opCreate, 11, 1, u32s(uint32(os.O_RDWR|os.O_CREATE), 0o100644, 0o022, 0), cstr("new"))
	req, err = c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	cr, ok := req.(*CreateRequest)
	if !ok || cr.Name != "new" || cr.Mode != 0o644 || cr.Umask != 0o022 {
		t.Fatalf("got %v, want a CREATE of new, 0644, umask 022", req)
	}
	cr.Respond(&CreateResponse{
		LookupResponse: LookupResponse{Node: 9, Generation: 2, EntryValid: time.Second, Attr: Attr{Inode: 99, Mode: 0o644}},
		OpenResponse:   resp,
	})
	_, body = k.reply(11)
	if len(body) != 128+16 {
		t.Fatalf("CREATE reply of %d bytes, want fuse_entry_out (128) and fuse_open_out (16)", len(body))
	}
	if le.Uint64(body[0:]) != 9 || le.Uint64(body[8:]) != 2 || le.Uint64(body[16:]) != 1 || le.Uint64(body[40:]) != 99 {
		t.Errorf("fuse_entry_out: nodeid %d generation %d entry_valid %d ino %d",
			le.Uint64(body[0:]), le.Uint64(body[8:]), le.Uint64(body[16:]), le.Uint64(body[40:]))
	}
	checkOpenOut(t, "CREATE", body[128:], resp)
}

func checkOpenOut(t *testing.T, op string, b []byte, want OpenResponse) {
	t.Helper()
	if len(b) != 16 {
		t.Fatalf("%s: fuse_open_out of %d bytes, want 16", op, len(b))
	}
	fh, fl, id := le.Uint64(b[0:]), le.Uint32(b[8:]), int32(le.Uint32(b[12:]))
	if fh != uint64(want.Handle) || fl != uint32(want.Flags) || id != want.BackingID {
		t.Errorf("%s: fuse_open_out fh %#x open_flags %#x backing_id %d; want %#x %#x %d",
			op, fh, fl, id, uint64(want.Handle), uint32(want.Flags), want.BackingID)
	}
	if want := "OpenDirectIO+OpenPassthrough"; OpenResponseFlags(fl).String() != want {
		t.Errorf("%s: flags %v, want %s", op, OpenResponseFlags(fl), want)
	}
}

// TestBackingOpenRefused checks that without passthrough granted the
// kernel refuses a backing file, so a caller falls back to serving READs.
func TestBackingOpenRefused(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	c, err := Mount(dir, FSName("clamfuse-backing-test"))
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	defer func() {
		go func() {
			for {
				req, err := c.ReadRequest()
				if err != nil {
					return
				}
				req.RespondError(Errno(syscall.ENOSYS))
			}
		}()
		if err := Unmount(dir); err != nil {
			abort(t, dir)
			t.Errorf("Unmount: %v", err)
		}
		c.Close()
	}()
	f, err := os.Open("/etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if id, err := c.BackingOpen(int(f.Fd())); err != syscall.EPERM {
		t.Errorf("BackingOpen without passthrough: id %d, %v; want EPERM", id, err)
	}
}

func TestInitFlags2String(t *testing.T) {
	if got, want := (InitPassthrough | InitHasExpireOnly | 1<<20).String(), "InitHasExpireOnly+InitPassthrough+0x100000"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
