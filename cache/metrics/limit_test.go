package metrics

import (
	"net"
	"testing"
)

// TestLimitConns: at most n connections are accepted at once; closing
// one (twice, even) makes room for exactly one more.
func TestLimitConns(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitConns(inner, 3).(*limitListener)
	defer ln.Close()
	accept := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	conns := []net.Conn{accept(), accept(), accept()}
	if len(ln.sem) != cap(ln.sem) {
		t.Fatalf("%d of %d slots taken after 3 accepts", len(ln.sem), cap(ln.sem))
	}
	conns[0].Close()
	conns[0].Close()
	if len(ln.sem) != 2 {
		t.Fatalf("%d slots taken after closing one connection twice, want 2", len(ln.sem))
	}
	accept()
	if len(ln.sem) != 3 {
		t.Fatalf("%d slots taken, want 3", len(ln.sem))
	}
}
