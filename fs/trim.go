package fs

import (
	"runtime/debug"
	"sync"
	"time"
)

// Memory given back after the kernel forgets many inodes (issue #12).
//
// The nodes of the inodes the kernel caches are most of clamfuse's heap.
// When the kernel forgets many at once (its inode cache shrunk under
// memory pressure, or drop_caches), their memory is garbage, but the Go
// runtime collects it only once the heap has grown to twice what it last
// found live, and gives the pages back to the system gradually after
// that: an idle clamfuse kept the memory of nodes long gone, just when
// the system wanted memory back. After trimmer.after forgets, once none
// has come for trimmer.quiet, clamfuse collects and gives the memory back
// at once (debug.FreeOSMemory), at most once every trimmer.every.
type trimmer struct {
	after int           // forgets that make a trim worth it
	quiet time.Duration // without forgets before it
	every time.Duration // between two trims at least
	free  func()        // debug.FreeOSMemory; a test's hook

	mu      sync.Mutex // guards the fields below
	forgot  int        // forgets since the last trim
	lastFgt time.Time  // the last forget
	lastTrm time.Time  // the last trim
	armed   bool       // a timer will call fire
}

func newTrimmer() *trimmer {
	return &trimmer{after: 10000, quiet: time.Second, every: 30 * time.Second, free: debug.FreeOSMemory}
}

// forgotten counts one node forgotten. A nil trimmer does nothing.
func (t *trimmer) forgotten() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgot++
	t.lastFgt = time.Now()
	if t.forgot >= t.after && !t.armed {
		t.armed = true
		time.AfterFunc(t.quiet, t.fire)
	}
}

func (t *trimmer) fire() {
	t.mu.Lock()
	now := time.Now()
	wait := max(t.quiet-now.Sub(t.lastFgt), t.every-now.Sub(t.lastTrm))
	if wait > 0 {
		time.AfterFunc(wait, t.fire)
		t.mu.Unlock()
		return
	}
	t.armed = false
	t.forgot = 0
	t.lastTrm = now
	t.mu.Unlock()
	t.free()
}
