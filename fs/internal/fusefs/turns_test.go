package fusefs

import (
	"sync"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// countTurns is a Turns that counts the turns each user holds; with
// busy, TryEnter takes none (the request waits for its turn in Enter).
type countTurns struct {
	mu    sync.Mutex
	held  map[uint32]int
	busy  bool
	tries int
}

func (c *countTurns) Enter(uid uint32) { c.mu.Lock(); c.held[uid]++; c.mu.Unlock() }
func (c *countTurns) TryEnter(uid uint32) bool {
	c.mu.Lock()
	c.tries++
	c.mu.Unlock()
	if c.busy {
		return false
	}
	c.Enter(uid)
	return true
}
func (c *countTurns) Leave(uid uint32) { c.mu.Lock(); c.held[uid]--; c.mu.Unlock() }
func (c *countTurns) of(uid uint32) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[uid]
}

// TestTurns: a user's request is served in a turn of that user, given
// back when it is done; one that says it waits (Blocking) gives it back
// while it waits and takes one again when it goes on (Unblocked); root's
// requests and those that only let go of something take none.
func TestTurns(t *testing.T) {
	hdr := func(id fuse.RequestID, uid uint32) fuse.Header { return fuse.Header{ID: id, Uid: uid} }
	for _, tc := range []struct {
		name     string
		req      fuse.Request
		busy     bool // no turn free at once
		waits    bool
		inTurn   int // turns held while served
		inWait   int // turns held while it waits
		afterall int
	}{
		{"getattr", &fuse.GetattrRequest{Header: hdr(1, 1000)}, false, false, 1, 1, 0},
		{"getattr waiting for a turn", &fuse.GetattrRequest{Header: hdr(7, 1000)}, true, false, 1, 1, 0},
		{"open that waits for its scan", &fuse.OpenRequest{Header: hdr(2, 1000)}, false, true, 1, 0, 0},
		{"root's lookup", &fuse.LookupRequest{Header: hdr(3, 0)}, false, false, 0, 0, 0},
		{"release", &fuse.ReleaseRequest{Header: hdr(4, 1000)}, false, false, 0, 0, 0},
		{"forget", &fuse.ForgetRequest{Header: hdr(5, 1000)}, false, false, 0, 0, 0},
		{"interrupt", &fuse.InterruptRequest{Header: hdr(6, 1000)}, false, false, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{}
			c := &countTurns{held: map[uint32]int{}, busy: tc.busy}
			s.SetTurns(c)
			uid, id := tc.req.Hdr().Uid, tc.req.Hdr().ID
			s.inTurn(tc.req, func(fuse.Request) {
				if got := c.of(uid); got != tc.inTurn {
					t.Errorf("served with %d turns held; want %d", got, tc.inTurn)
				}
				if !tc.waits {
					return
				}
				s.Blocking(id)
				if got := c.of(uid); got != tc.inWait {
					t.Errorf("waiting with %d turns held; want %d", got, tc.inWait)
				}
				s.Unblocked(id)
				if got := c.of(uid); got != tc.inTurn {
					t.Errorf("going on with %d turns held; want %d", got, tc.inTurn)
				}
			})
			if got := c.of(uid); got != tc.afterall {
				t.Errorf("%d turns held once served; want %d", got, tc.afterall)
			}
			if len(s.turnHeld) != 0 || len(s.turnLent) != 0 {
				t.Errorf("requests left recorded: %v held, %v lent", s.turnHeld, s.turnLent)
			}
		})
	}
}
