package fs

import (
	"runtime"
	"testing"
	"time"
)

// TestGCPercentFor: a small heap is paced as GOGC=100, a large one with
// a headroom of a quarter of it (issue #12).
func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		live uint64
		want int
	}{
		{0, 100},
		{1 * mib, 100},
		{4 * mib, 100},
		{8 * mib, 50},
		{16 * mib, 25},
		{20 * mib, 25},
		{500 * mib, 25},
	}
	for _, tt := range tests {
		if got := gcPercentFor(tt.live); got != tt.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tt.live/mib, got, tt.want)
		}
	}
}

// TestGCPacer: the pacer follows the live heap after each collection,
// and sets the percentage only when it moves by gcPaceStep or more.
func TestGCPacer(t *testing.T) {
	const mib = 1 << 20
	live := make(chan uint64, 1)
	var last uint64
	sets := make(chan int, 16)
	p := &gcPacer{
		live: func() uint64 {
			select {
			case last = <-live:
			default:
			}
			return last
		},
		set: func(v int) int {
			select {
			case sets <- v:
			default:
			}
			return 0
		},
		percent: 100,
	}
	defer p.stopped.Store(true)
	for _, step := range []struct {
		live uint64
		want int // -1: no change
	}{
		{2 * mib, -1},
		{20 * mib, 25},
		{21 * mib, -1},
		{8 * mib, 50},
		{7 * mib, 57},
		{3 * mib, 100},
	} {
		live <- step.live
		p.adjust()
		select {
		case got := <-sets:
			if got != step.want {
				t.Errorf("live %d MiB: set %d, want %d", step.live/mib, got, step.want)
			}
		default:
			if step.want != -1 {
				t.Errorf("live %d MiB: nothing set, want %d", step.live/mib, step.want)
			}
		}
	}

	// Armed, it adjusts after a collection.
	p.arm()
	live <- 40 * mib
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		select {
		case got := <-sets:
			if got != 25 {
				t.Errorf("after a collection: set %d, want 25", got)
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no adjustment 10 s after collections")
		}
		runtime.Gosched()
	}
}
