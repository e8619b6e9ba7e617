package fs

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// The collector's pace for a large heap of nodes (issue #12).
//
// Go's collector lets the heap grow to twice what it last found live
// (GOGC=100) before it collects again, and keeps about that much memory
// mapped: with the nodes of 100 000 inodes the kernel caches (some 20 MB
// that stay live as long as the kernel keeps them) that doubling was
// about 20 MB of resident memory holding nothing. PaceGC lowers the
// collector's percentage as the live heap grows, so that the headroom
// stays about a quarter of the live heap (never less than 4 MiB, and
// never above GOGC=100's): a small heap, as with a few thousand inodes,
// is paced as before, and a large one costs more frequent collections,
// each of which mostly marks nodes that do not change.
//
// The live heap is read after every collection (a finalizer on an object
// made afresh each cycle), and the percentage set when it changes by
// more than gcPaceStep. An administrator's GOGC (the environment) is
// left alone.

const (
	gcMinHeadroom = 4 << 20 // bytes: below this much live heap, GOGC=100
	gcMinPercent  = 25      // the headroom is a quarter of the live heap at least
	gcPaceStep    = 5       // percentage points the setting changes by at least
)

// gcPercentFor is the collector's percentage for a live heap of live
// bytes: the headroom is max(live/4, gcMinHeadroom), at most live (100%).
func gcPercentFor(live uint64) int {
	if live == 0 {
		return 100
	}
	headroom := max(live/4, gcMinHeadroom)
	return int(min(max(headroom*100/live, gcMinPercent), 100))
}

// gcPacer sets the collector's percentage from the live heap.
type gcPacer struct {
	live    func() uint64 // the live heap after the last collection
	set     func(int) int // debug.SetGCPercent; a test's hook
	percent int           // the percentage set last; only the finalizer goroutine touches it
	stopped atomic.Bool   // no more adjustments (tests)
}

// adjust sets the percentage for the live heap now, if it moved enough.
func (p *gcPacer) adjust() {
	want := gcPercentFor(p.live())
	if d := want - p.percent; d >= gcPaceStep || d <= -gcPaceStep || (want == 100) != (p.percent == 100) {
		p.set(want)
		p.percent = want
	}
}

// gcSentinel is made afresh each cycle; its finalizer runs after the
// collection that found it garbage. It holds a pointer so that it is not
// a tiny allocation, whose finalizer may never run.
type gcSentinel struct{ p *gcPacer }

func (p *gcPacer) arm() {
	s := &gcSentinel{p}
	runtime.SetFinalizer(s, func(s *gcSentinel) {
		if s.p.stopped.Load() {
			return
		}
		s.p.adjust()
		s.p.arm()
	})
}

var paceOnce sync.Once

// PaceGC paces the collector for the live heap from now on (see above),
// unless GOGC is set in the environment. Once per process; later calls
// do nothing.
func PaceGC() {
	paceOnce.Do(func() {
		if os.Getenv("GOGC") != "" {
			return
		}
		p := &gcPacer{live: liveHeapBytes, set: debug.SetGCPercent, percent: 100}
		p.arm()
	})
}

// liveHeapBytes is the heap the last collection found live.
func liveHeapBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
