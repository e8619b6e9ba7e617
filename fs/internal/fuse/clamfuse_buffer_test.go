package fuse

import (
	"runtime"
	"testing"
)

// TestBigMessagesOutsideHeap checks that the 1 MiB messages requests are
// read into cost the Go heap nothing (they are mapped, clamfuse_buffer.go),
// and that of the big messages that held big requests only bigHot keep
// their pages when back in the pool.
func TestBigMessagesOutsideHeap(t *testing.T) {
	const n = bigHot + 4
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	ms := make([]*message, n)
	for i := range ms {
		ms[i] = getBig(nil)
		if len(ms[i].buf) != bufSize {
			t.Fatalf("big message of %d bytes, want %d", len(ms[i].buf), bufSize)
		}
	}
	if grew := int64(heap()) - int64(before); grew > 64<<10 {
		t.Errorf("%d big messages grew the live heap by %d bytes; want them outside it", n, grew)
	}
	bigPool.mu.Lock()
	resident0 := bigPool.resident
	bigPool.mu.Unlock()
	for _, m := range ms {
		for i := range m.buf {
			m.buf[i] = 1 // a 1 MiB WRITE
		}
		putSized(m)
	}
	bigPool.mu.Lock()
	resident := bigPool.resident
	bigPool.mu.Unlock()
	if resident > bigHot || resident < resident0 {
		t.Errorf("%d big messages marked resident after %d big requests, want at most %d", resident, n, bigHot)
	}
	// A message whose pages were given back reads as zeroes past its
	// first page, and serves again.
	zeroed := 0
	for i := range ms {
		ms[i] = getBig(nil)
		if ms[i].buf[len(ms[i].buf)-1] == 0 {
			zeroed++
		}
	}
	for _, m := range ms {
		m.buf = m.buf[:100]
		putSized(m)
	}
	if zeroed < n-bigHot {
		t.Errorf("%d of %d big messages gave their pages back, want at least %d", zeroed, n, n-bigHot)
	}
}
