package cache

import (
	"context"
	"sync"
)

// slots are the scan slots: at most Options.MaxConcurrent scans at once.
// A slot that frees goes first to the scans that opens (and prewarm) wait
// for, in the order they came, and only when none waits to a background
// scan after a write (Prescan), in the order they came: an open waits
// behind the scans already running when it came, never behind a
// background scan that had not started.
//
// A background scan takes its slot before its flight starts (see settle),
// so an open never joins a background scan still waiting for a slot.
type slots struct {
	mu     sync.Mutex // guards the fields below; a leaf
	free   int        // slots not taken; 0 whenever someone waits
	fg, bg []*slotWaiter
}

// slotWaiter is one scan waiting for a slot; ch is closed when it is
// handed one (granted, under slots.mu).
type slotWaiter struct {
	ch      chan struct{}
	granted bool
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire takes a slot, waiting until ctx is done; bg says a background
// scan asks, which yields to every other. onWait, when not nil, is called
// when every slot is taken (a test hook). It reports whether it got one.
func (s *slots) acquire(ctx context.Context, bg bool, onWait func()) bool {
	s.mu.Lock()
	if s.free > 0 {
		s.free--
		s.mu.Unlock()
		return true
	}
	w := &slotWaiter{ch: make(chan struct{})}
	if bg {
		s.bg = append(s.bg, w)
	} else {
		s.fg = append(s.fg, w)
	}
	s.mu.Unlock()
	if onWait != nil {
		onWait()
	}
	select {
	case <-w.ch:
		return true
	case <-ctx.Done():
	}
	s.mu.Lock()
	if w.granted {
		// Handed a slot as ctx ended: pass it on.
		s.mu.Unlock()
		s.release()
		return false
	}
	if bg {
		s.bg = without(s.bg, w)
	} else {
		s.fg = without(s.fg, w)
	}
	s.mu.Unlock()
	return false
}

// release gives a slot back: to the first open waiting, else to the first
// background scan waiting, else to the free ones.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var w *slotWaiter
	switch {
	case len(s.fg) > 0:
		w, s.fg[0] = s.fg[0], nil
		s.fg = s.fg[1:]
	case len(s.bg) > 0:
		w, s.bg[0] = s.bg[0], nil
		s.bg = s.bg[1:]
	default:
		s.free++
		return
	}
	w.granted = true
	close(w.ch)
}

// taken is the number of slots in use, for tests.
func (s *slots) taken(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return n - s.free
}

func without(ws []*slotWaiter, w *slotWaiter) []*slotWaiter {
	for i, x := range ws {
		if x == w {
			copy(ws[i:], ws[i+1:])
			ws[len(ws)-1] = nil
			return ws[:len(ws)-1]
		}
	}
	return ws
}
