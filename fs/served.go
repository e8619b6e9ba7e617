package fs

import (
	"sync"

	"github.com/clamfuse/clamfuse/cache"
)

// Bytes served against the contents judged.
//
// An open that keeps the kernel's page cache (FOPEN_KEEP_CACHE, see
// Node.keepCache) reads what the READs of earlier opens put there. A READ
// served while the backing file held bytes other than those judged, with
// no trace in its size or times (a writer outside the mount changing a
// dirty page of a shared mapping, then putting it back), would leave
// unjudged bytes in that cache for every later open to read, whatever the
// gate verified at their open. So for a file whose contents the gate
// verifies (cache.Decision.Sum), each handle hashes what it serves, in
// order from offset 0, and compares the digest with the judged one at the
// end of the file; a READ out of that order, a digest that differs, or a
// handle closed before the end, and the node's page cache is not kept at
// the next open. While a handle is between its first READ and that check,
// no open keeps the page cache either (Node.verifying).
//
// A passthrough open (passthrough.go) serves no READ and fills no FUSE
// page cache: the kernel reads the backing file's own. It has nothing to
// check here; it drops the node's kept state instead (Node.keep), so the
// next open served by clamfuse does not keep pages from before it.
//
// Lock order: Handle.smu, then Node.hmu.

// served is a handle's check of the bytes it served.
type served struct {
	smu   sync.Mutex // guards the fields below
	state uint8      // servedIdle, servedPending or servedFailed
	off   int64      // bytes hashed so far, from offset 0
	hash  *cache.Digest
}

// A handle's check goes from idle to pending at a READ, and back to idle
// once the bytes served from offset 0 to the end were the ones judged.
// A READ out of order or a digest that differs fails it: the page cache
// is not kept at the next open, nor at any open while the handle lives
// (it may serve more such bytes), since it stays counted in
// Node.reading until it is released.
const (
	servedIdle    = iota // no READ unchecked
	servedPending        // READs served in order from offset 0, not yet to the end
	servedFailed         // some byte served may not be one judged
)

// readStarts is called before a READ of h is served: from then until its
// bytes are checked, no open keeps the page cache.
func (h *Handle) readStarts() {
	if h.sum == 0 {
		return
	}
	s := &h.served
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.state == servedIdle {
		s.state, s.off, s.hash = servedPending, 0, cache.NewDigest()
		h.node.verifying(+1)
	}
}

// servedBytes checks data, just served by h at off, against the contents
// judged at its open; err is the READ's error, if any.
func (h *Handle) servedBytes(off int64, data []byte, err error) {
	if h.sum == 0 {
		return
	}
	s := &h.served
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.state != servedPending {
		return
	}
	if len(data) == 0 && err == nil && off >= h.size {
		// Nothing served: a READ at or past the end.
		if s.off == 0 {
			s.state, s.hash = servedIdle, nil
			h.node.verifying(-1)
		}
		return
	}
	if err != nil || off != s.off {
		h.servedFails()
		return
	}
	s.hash.Write(data)
	s.off += int64(len(data))
	if s.off < h.size {
		return
	}
	if s.off != h.size || s.hash.Sum() != h.sum {
		h.servedFails()
		return
	}
	s.state, s.hash = servedIdle, nil
	h.node.verifying(-1)
}

// servedFails fails h's check; s.smu is held.
func (h *Handle) servedFails() {
	h.served.state, h.served.hash = servedFailed, nil
	h.node.dropKeepCache()
}

// servedClose ends the check of a handle being released.
func (h *Handle) servedClose() {
	if h.sum == 0 {
		return
	}
	s := &h.served
	s.smu.Lock()
	defer s.smu.Unlock()
	switch s.state {
	case servedPending:
		h.servedFails()
		fallthrough
	case servedFailed:
		h.node.verifying(-1)
	}
	s.state = servedIdle
}
