package fuse

import "testing"

// TestPending: Conn.Pending reports a request the kernel queued until a
// reader takes it, without taking it itself.
func TestPending(t *testing.T) {
	c, k := newFakeKernel(t, Protocol{7, 40}, 0)
	if c.Pending() {
		t.Fatal("Pending with nothing sent")
	}
	const getattr = 3
	k.send(getattr, 7, 1, u64s(0, 0))
	for range 2 {
		if !c.Pending() {
			t.Fatal("not Pending with a GETATTR sent and not read")
		}
	}
	req, err := c.ReadRequest()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := req.(*GetattrRequest); !ok || req.Hdr().ID != 7 {
		t.Fatalf("read %v, want the GETATTR sent", req)
	}
	if c.Pending() {
		t.Error("Pending once the only request was read")
	}
	req.RespondError(ENOENT)
}
