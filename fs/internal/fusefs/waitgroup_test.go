package fusefs

import (
	"sync"
	"testing"
	"time"
	"unsafe"
)

// TestServeNodeSize guards the FUSE server's node of every inode the
// kernel caches: 48 bytes, the 48-byte allocation class (it was 56, in
// the 64-byte class, with upstream's sync.WaitGroup; issue #12).
func TestServeNodeSize(t *testing.T) {
	if n := unsafe.Sizeof(serveNode{}); n > 48 {
		t.Errorf("serveNode is %d bytes, over 48", n)
	}
}

// TestNodeWaitGroup: Wait returns at once at zero, and only once every
// Add is matched by a Done otherwise; many groups and waiters at once
// (go test -race).
func TestNodeWaitGroup(t *testing.T) {
	var w nodeWaitGroup
	w.Wait() // zero: at once

	w.Add(2)
	done := make(chan struct{})
	go func() {
		w.Wait()
		close(done)
	}()
	w.Done()
	select {
	case <-done:
		t.Fatal("Wait returned with the count at 1")
	default:
	}
	w.Done()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return 10 s after the count reached zero")
	}

	groups := make([]nodeWaitGroup, 64)
	var wg sync.WaitGroup
	for i := range groups {
		g := &groups[i]
		for range 200 {
			g.Add(1)
			wg.Add(2)
			go func() { defer wg.Done(); g.Done() }()
			go func() { defer wg.Done(); g.Wait() }()
		}
	}
	wg.Wait()
	for i := range groups {
		groups[i].Wait()
	}
}
