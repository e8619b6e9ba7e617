package fusefs

import (
	"sync"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// countTurns is a Turns that counts the turns each user holds; with
// busy, Queue takes none at once (the request waits for its turn, which
// comes at once); a request carrying more than room is refused.
type countTurns struct {
	mu    sync.Mutex
	held  map[uint32]int
	busy  bool
	room  int
	costs []int // the bytes of each Queue
}

func (c *countTurns) Enter(uid uint32) { c.mu.Lock(); c.held[uid]++; c.mu.Unlock() }
func (c *countTurns) Queue(uid, pid uint32, bytes int) (<-chan struct{}, bool) {
	c.mu.Lock()
	c.costs = append(c.costs, bytes)
	c.mu.Unlock()
	if c.busy && bytes > c.room {
		return nil, false
	}
	c.Enter(uid)
	if c.busy {
		turn := make(chan struct{})
		close(turn)
		return turn, true
	}
	return nil, true
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
// requests and those that only let go of something take none. A request
// is charged the data it carries (carried), and one refused is answered
// (ENOMEM) unserved.
func TestTurns(t *testing.T) {
	hdr := func(id fuse.RequestID, uid uint32) fuse.Header { return fuse.Header{ID: id, Uid: uid} }
	for _, tc := range []struct {
		name     string
		req      fuse.Request
		busy     bool // no turn free at once
		room     int  // the most a request waiting may carry
		refused  bool
		cost     int // charged, -1: Queue not asked
		waits    bool
		inTurn   int // turns held while served
		inWait   int // turns held while it waits
		afterall int
	}{
		{"getattr", &fuse.GetattrRequest{Header: hdr(1, 1000)}, false, 0, false, 0, false, 1, 1, 0},
		{"getattr waiting for a turn", &fuse.GetattrRequest{Header: hdr(7, 1000)}, true, 0, false, 0, false, 1, 1, 0},
		{"getattr refused a turn", &fuse.GetattrRequest{Header: hdr(8, 1000)}, true, -1, true, 0, false, 0, 0, 0},
		{"write of 1 MiB waiting for a turn", &fuse.WriteRequest{Header: hdr(9, 1000), Data: make([]byte, 1<<20)}, true, 1 << 20, false, 1 << 20, false, 1, 1, 0},
		{"write of 1 MiB refused a turn", &fuse.WriteRequest{Header: hdr(10, 1000), Data: make([]byte, 1<<20)}, true, 1<<20 - 1, true, 1 << 20, false, 0, 0, 0},
		{"setxattr", &fuse.SetxattrRequest{Header: hdr(11, 1000), Name: "user.a", Xattr: make([]byte, 100)}, true, 1 << 20, false, 106, false, 1, 1, 0},
		{"open that waits for its scan", &fuse.OpenRequest{Header: hdr(2, 1000)}, false, 0, false, 0, true, 1, 0, 0},
		{"root's lookup", &fuse.LookupRequest{Header: hdr(3, 0)}, false, 0, false, -1, false, 0, 0, 0},
		{"release", &fuse.ReleaseRequest{Header: hdr(4, 1000)}, false, 0, false, -1, false, 0, 0, 0},
		{"forget", &fuse.ForgetRequest{Header: hdr(5, 1000)}, false, 0, false, -1, false, 0, 0, 0},
		{"interrupt", &fuse.InterruptRequest{Header: hdr(6, 1000)}, false, 0, false, -1, false, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{}
			c := &countTurns{held: map[uint32]int{}, busy: tc.busy, room: tc.room}
			s.SetTurns(c)
			var refused bool
			s.refuseTurn = func(fuse.Request) { refused = true }
			uid, id := tc.req.Hdr().Uid, tc.req.Hdr().ID
			served := false
			s.inTurn(tc.req, func(fuse.Request) {
				served = true
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
			if refused != tc.refused || served == tc.refused {
				t.Errorf("refused %v, served %v; want refused %v", refused, served, tc.refused)
			}
			if tc.cost >= 0 && (len(c.costs) != 1 || c.costs[0] != tc.cost) {
				t.Errorf("charged %v; want %d", c.costs, tc.cost)
			}
			if tc.cost < 0 && len(c.costs) != 0 {
				t.Errorf("charged %v; want no turn taken", c.costs)
			}
			if got := c.of(uid); got != tc.afterall {
				t.Errorf("%d turns held once served; want %d", got, tc.afterall)
			}
			if len(s.turnHeld) != 0 || len(s.turnLent) != 0 {
				t.Errorf("requests left recorded: %v held, %v lent", s.turnHeld, s.turnLent)
			}
		})
	}
}
