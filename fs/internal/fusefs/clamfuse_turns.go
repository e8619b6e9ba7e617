package fusefs

// clamfuse: each user's requests served at once are bounded.

import (
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// Turns bounds the requests of each user being served at once: Enter
// waits for a turn of user uid, TryEnter takes one only if it need not
// wait, Leave gives it back (fs: caller.Enter, TryEnter and Leave, which
// do not bound root's).
type Turns interface {
	Enter(uid uint32)
	TryEnter(uid uint32) bool
	Leave(uid uint32)
}

// SetTurns has every request but those that only let go of something
// (FORGET, INTERRUPT, RELEASE, DESTROY) wait for its user's turn before
// it is served, and give the turn back once served; a request that says
// it waits (Blocking: an open waiting for its scan) gives it back while
// it waits, and takes one again when it goes on (Unblocked). Call before
// Serve.
func (s *Server) SetTurns(t Turns) {
	s.turns = t
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
	if !s.turns.TryEnter(uid) {
		// It waits for a turn: the others are read meanwhile.
		s.handOver(id)
		s.turns.Enter(uid)
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
