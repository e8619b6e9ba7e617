package fs

import (
	"testing"
	"time"
)

// TestTrimmer checks that memory is given back once after many forgets,
// when they have stopped, and not before.
func TestTrimmer(t *testing.T) {
	freed := make(chan time.Time, 10)
	tr := &trimmer{after: 3, quiet: 20 * time.Millisecond, every: 0, free: func() { freed <- time.Now() }}
	tr.forgotten()
	tr.forgotten()
	select {
	case <-freed:
		t.Fatal("trimmed after 2 forgets, want 3")
	case <-time.After(100 * time.Millisecond): // a bound on a wait for nothing to happen
	}
	tr.forgotten()
	var last time.Time
	for range 5 { // forgets keep coming: no trim yet
		last = time.Now()
		tr.forgotten()
	}
	select {
	case at := <-freed:
		if d := at.Sub(last); d < tr.quiet {
			t.Errorf("trimmed %v after the last forget, want at least %v", d, tr.quiet)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no trim after 8 forgets")
	}
	select {
	case <-freed:
		t.Fatal("trimmed twice")
	case <-time.After(100 * time.Millisecond):
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.forgot != 0 || tr.armed {
		t.Errorf("after the trim: %d forgets counted, armed %v", tr.forgot, tr.armed)
	}
}
