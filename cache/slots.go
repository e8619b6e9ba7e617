package cache

import (
	"context"
	"sync"
)

// slots are the scan slots: at most Options.MaxConcurrent scans at once.
// A slot that frees goes first to the scans that opens (and prewarm) wait
// for, and only when none waits to a background scan after a write
// (Prescan), in the order they came: an open waits behind the scans
// already running when it came, never behind a background scan that had
// not started.
//
// The opens' scans waiting are served user by user, in turn (users):
// each slot that frees goes to the longest-waiting scan of the next user
// in the round. In the order they came, a user who opened hundreds of
// files nobody had judged (one open waiting for its scan per descriptor
// the user may hold: mount.max_open_per_user, 752 by default here) put
// each other user's next open behind all of them, for minutes if each
// takes long (a large file; an archive clamd takes its time over) and
// past clamd.timeout, at which that open fails (fail closed); in turn, it
// waits for one scan of each user waiting, at most.
//
// A background scan takes its slot before its flight starts (see settle),
// so an open never joins a background scan still waiting for a slot.
type slots struct {
	mu   sync.Mutex // guards the fields below; a leaf
	free int        // slots not taken; 0 whenever someone waits
	fg   users
	bg   []*slotWaiter
}

// users are the scans waiting for a slot, per user, served in turn: the
// next slot goes to the first scan of the user at the head of the round,
// who then goes to its end if more of theirs wait. A user whose first
// scan comes joins the end.
type users struct {
	round []uint32                 // the users with scans waiting, the next served first
	wait  map[uint32][]*slotWaiter // each one's, in the order they came
	n     int                      // scans waiting, in all
}

func (u *users) push(uid uint32, w *slotWaiter) {
	if u.wait == nil {
		u.wait = map[uint32][]*slotWaiter{}
	}
	q := u.wait[uid]
	if len(q) == 0 {
		u.round = append(u.round, uid)
	}
	u.wait[uid] = append(q, w)
	u.n++
}

// pop takes the next scan served, or nil if none waits.
func (u *users) pop() *slotWaiter {
	if u.n == 0 {
		return nil
	}
	uid := u.round[0]
	u.round = u.round[1:]
	q := u.wait[uid]
	w := q[0]
	q[0] = nil
	if q = q[1:]; len(q) > 0 {
		u.wait[uid] = q
		u.round = append(u.round, uid)
	} else {
		delete(u.wait, uid)
	}
	u.n--
	return w
}

// remove takes w, of user uid, out of the wait (its wait ended).
func (u *users) remove(uid uint32, w *slotWaiter) {
	q := without(u.wait[uid], w)
	switch {
	case len(q) == len(u.wait[uid]):
		return
	case len(q) > 0:
		u.wait[uid] = q
	default:
		delete(u.wait, uid)
		for i, x := range u.round {
			if x == uid {
				u.round = append(u.round[:i], u.round[i+1:]...)
				break
			}
		}
	}
	u.n--
}

// slotWaiter is one scan waiting for a slot; ch is closed when it is
// handed one (granted, under slots.mu).
type slotWaiter struct {
	ch      chan struct{}
	granted bool
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire takes a slot for a scan of user uid's, waiting until ctx is
// done; bg says a background scan asks, which yields to every other.
// onWait, when not nil, is called when every slot is taken (a test
// hook). It reports whether it got one.
func (s *slots) acquire(ctx context.Context, uid uint32, bg bool, onWait func()) bool {
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
		s.fg.push(uid, w)
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
		s.fg.remove(uid, w)
	}
	s.mu.Unlock()
	return false
}

// release gives a slot back: to the next open waiting (users), else to
// the first background scan waiting, else to the free ones.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.fg.pop()
	if w == nil && len(s.bg) > 0 {
		w, s.bg[0] = s.bg[0], nil
		s.bg = s.bg[1:]
	}
	if w == nil {
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
