package fuse

import (
	"syscall"
	"testing"
)

// TestNotifyLayout checks the notifications clamfuse adds against
// fuse_notify_inval_inode_out (ino, off, len) and
// fuse_notify_inval_entry_out (parent, namelen, flags; name).
func TestNotifyLayout(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 40}, InitInitExt)

	if err := c.InvalidateNodeAttr(77); err != nil {
		t.Fatal(err)
	}
	code, body := k.reply(0)
	if code != notifyCodeInvalInode || len(body) != 24 {
		t.Fatalf("notification %d of %d bytes, want FUSE_NOTIFY_INVAL_INODE (2) of 24", code, len(body))
	}
	if ino, off, n := le.Uint64(body[0:]), int64(le.Uint64(body[8:])), int64(le.Uint64(body[16:])); ino != 77 || off >= 0 || n != 0 {
		t.Errorf("inval_inode ino %d off %d len %d; want 77, negative (attributes only), 0", ino, off, n)
	}

	if err := c.ExpireEntry(5, "name"); err != syscall.ENOSYS {
		t.Errorf("ExpireEntry without InitHasExpireOnly: %v, want ENOSYS", err)
	}
	c.ext.flags2 = InitHasExpireOnly
	if err := c.ExpireEntry(5, "name"); err != nil {
		t.Fatal(err)
	}
	code, body = k.reply(0)
	if code != notifyCodeInvalEntry || len(body) != 16+5 {
		t.Fatalf("notification %d of %d bytes, want FUSE_NOTIFY_INVAL_ENTRY (3) of 21", code, len(body))
	}
	if parent, n, fl, name := le.Uint64(body[0:]), le.Uint32(body[8:]), le.Uint32(body[12:]), string(body[16:]); parent != 5 || n != 4 || fl != 1 || name != "name\x00" {
		t.Errorf("inval_entry parent %d namelen %d flags %d name %q; want 5, 4, FUSE_EXPIRE_ONLY, name", parent, n, fl, name)
	}

	// Upstream's InvalidateEntry leaves flags 0: the entry is dropped.
	if err := c.InvalidateEntry(5, "name"); err != nil {
		t.Fatal(err)
	}
	if _, body = k.reply(0); le.Uint32(body[12:]) != 0 {
		t.Errorf("InvalidateEntry flags %d, want 0", le.Uint32(body[12:]))
	}
}

func TestRequestInitFlags2(t *testing.T) {
	conf := mountConfig{}
	if err := RequestInitFlags2(InitPassthrough)(&conf); err == nil {
		t.Error("RequestInitFlags2(InitPassthrough) accepted; Passthrough asks for it")
	}
	if err := RequestInitFlags2(InitHasExpireOnly)(&conf); err != nil || conf.ext.initFlags2 != InitHasExpireOnly {
		t.Errorf("RequestInitFlags2(InitHasExpireOnly): %v, flags2 %v", err, conf.ext.initFlags2)
	}
	for _, tt := range []struct {
		name  string
		minor uint32
		flags InitFlags
		f2    uint32
		want  InitFlags2
	}{
		{"6.18", 45, kernel618Flags, kernel618Flags2, InitHasExpireOnly},
		{"6.1", 38, kernel61Flags, kernel61Flags2, InitHasExpireOnly},
		{"5.15", 34, kernel61Flags &^ InitInitExt, 0, 0},
	} {
		c, out := kernelInit(t, tt.minor, tt.flags, tt.f2, RequestInitFlags2(InitHasExpireOnly))
		if c.Features2() != tt.want || InitFlags2(out.flags2) != tt.want {
			t.Errorf("%s: Features2 %v, flags2 %v; want %v", tt.name, c.Features2(), InitFlags2(out.flags2), tt.want)
		}
	}
}
