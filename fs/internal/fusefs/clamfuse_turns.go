package fusefs

// clamfuse: each user's requests served at once are bounded.

import (
	"syscall"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// Turns bounds the requests of each user being served at once, and those
// waiting for a turn (fs: caller.Queue, Enter and Leave, which do not
// bound root's). Queue takes a turn of user uid for a request of process
// pid that carries bytes of data: at once (nil, true), or later, when
// the channel it returns is closed (turn, true), or not at all (nil,
// false: uid has too many requests waiting, or they carry too much).
// Enter waits for a turn, unbounded; Leave gives one back.
type Turns interface {
	Queue(uid, pid uint32, bytes int) (turn <-chan struct{}, ok bool)
	Enter(uid uint32)
	Leave(uid uint32)
}

// carried is the data req holds while it waits for its turn, besides
// its goroutine and the request itself: that of a WRITE (up to 1 MiB, in
// the pages of a big message the kernel wrote) or a SETXATTR.
func carried(req fuse.Request) int {
	switch r := req.(type) {
	case *fuse.WriteRequest:
		return len(r.Data)
	case *fuse.SetxattrRequest:
		return len(r.Name) + len(r.Xattr)
	}
	return 0
}

// refuseTurn answers a request refused a turn (Turns.Queue): ENOMEM,
// "cannot allocate memory", as the kernel answers a call it has no
// memory for.
func refuseTurn(req fuse.Request) { req.RespondError(fuse.Errno(syscall.ENOMEM)) }

// SetTurns has every request but those that only let go of something
// (FORGET, INTERRUPT, RELEASE, DESTROY) wait for its user's turn before
// it is served, and give the turn back once served; a request that says
// it waits (Blocking: an open waiting for its scan) gives it back while
// it waits, and takes one again when it goes on (Unblocked). A request
// refused a turn (its user's waiting requests would be too many, or
// carry too much) is answered ENOMEM at once, unserved. Call before
// Serve.
func (s *Server) SetTurns(t Turns) {
	s.turns = t
	s.refuseTurn = refuseTurn
	s.turnHeld = map[fuse.RequestID]uint32{}
	s.turnLent = map[fuse.RequestID]uint32{}
}

// needsTurn reports whether req is served in its user's turn.
func needsTurn(req fuse.Request) bool {
	switch req.(type) {
	case *fuse.ForgetRequest, *fuse.BatchForgetRequest, *fuse.InterruptRequest,
		*fuse.ReleaseRequest, *fuse.DestroyRequest:
		return false
	}
	return req.Hdr().Uid != 0
}

// serveInTurn serves req in its user's turn (SetTurns).
func (s *Server) serveInTurn(req fuse.Request) { s.inTurn(req, s.serve) }

// inTurn runs serve(req) in req's user's turn.
func (s *Server) inTurn(req fuse.Request, serve func(fuse.Request)) {
	if s.turns == nil || !needsTurn(req) {
		serve(req)
		return
	}
	h := req.Hdr() // req is not to be read once answered
	uid, id := h.Uid, h.ID
	turn, ok := s.turns.Queue(uid, h.Pid, carried(req))
	if !ok {
		s.refuseTurn(req)
		return
	}
	if turn != nil {
		// It waits for a turn: the others are read meanwhile.
		s.handOver(id)
		<-turn
	}
	s.turnMu.Lock()
	s.turnHeld[id] = uid
	s.turnMu.Unlock()
	serve(req)
	s.turnMu.Lock()
	_, held := s.turnHeld[id]
	delete(s.turnHeld, id)
	delete(s.turnLent, id)
	s.turnMu.Unlock()
	if held {
		s.turns.Leave(uid)
	}
}

// lendTurn gives back the turn of request id while it waits (Blocking).
func (s *Server) lendTurn(id fuse.RequestID) {
	if s.turns == nil {
		return
	}
	s.turnMu.Lock()
	uid, held := s.turnHeld[id]
	if held {
		delete(s.turnHeld, id)
		s.turnLent[id] = uid
	}
	s.turnMu.Unlock()
	if held {
		s.turns.Leave(uid)
	}
}

// Unblocked tells that the request id, which said it waits (Blocking),
// goes on: it waits for its user's turn again, if it gave one back.
func (s *Server) Unblocked(id fuse.RequestID) {
	if s.turns == nil {
		return
	}
	s.turnMu.Lock()
	uid, lent := s.turnLent[id]
	delete(s.turnLent, id)
	s.turnMu.Unlock()
	if !lent {
		return
	}
	s.turns.Enter(uid)
	s.turnMu.Lock()
	s.turnHeld[id] = uid
	s.turnMu.Unlock()
}
