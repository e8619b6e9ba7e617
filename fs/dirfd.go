package fs

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// dirCache bounds the O_PATH descriptors that directory nodes keep (see
// Node.pathFD) to Limits.DirFDs. A cached descriptor saves a path walk
// per operation and keeps a directory renamed behind the mount's back
// the same directory; but the kernel may know any number of directories
// (a find over 20 000 of them), and one descriptor each used to exhaust
// RLIMIT_NOFILE. Past the bound the least recently used descriptor is
// closed (the clock algorithm: a use sets the node's used bit, which the
// hand clears on its way round, and takes the first node whose bit is
// clear); that node resolves its path beneath the root again when it is
// next needed, checking that it still leads to the same inode, as it
// does when it never had a descriptor.
//
// Lock order: nodeState.fdMu (for writing), then dirCache.mu. The hand
// takes a victim's fdMu only with TryLock, and passes over a node it cannot
// lock at once (in use, or being cached or forgotten by another
// goroutine): it never waits for a node while holding mu, never for one
// its caller holds, and never closes a descriptor in use. If every
// cached node is in use, the new descriptor is not cached: the caller
// uses it once and closes it. pathFD, too, takes a node's fdMu for
// writing only with TryLock: with eviction a node loses and regains its
// descriptor all the time, and a goroutine holding directory A's
// descriptor (read lock) while it waited to cache B's could wait for one
// holding B's while it waited for A's. The only fdMu writer that waits
// is Forget (the kernel forgets no directory an operation is using); a
// file's orphan descriptor is guarded by Node.hmu, not by an fdMu.
type dirCache struct {
	mu   sync.Mutex   // guards the fields below and every nodeState.slot
	ring []*nodeState // the directories' cached states, nil in free slots
	// used[i] is set when ring[i]'s descriptor was used since the
	// clock last passed; written without mu (touchFD). It lives here,
	// not in the Node, as only the nodes holding a descriptor need it.
	used []atomic.Bool
	free []int32 // free slots
	hand int     // the next slot the clock looks at
}

func newDirCache(size int) *dirCache {
	c := &dirCache{ring: make([]*nodeState, max(size, 1))}
	c.used = make([]atomic.Bool, len(c.ring))
	c.free = make([]int32, len(c.ring))
	for i := range c.free {
		c.free[i] = int32(len(c.ring) - 1 - i)
	}
	return c
}

// add makes room for the descriptor of a directory's state s, closing
// another's if need be, and reports whether s may cache one. The caller
// holds s.fdMu for writing and s has no descriptor.
func (c *dirCache) add(s *nodeState) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := -1
	if k := len(c.free); k > 0 {
		slot = int(c.free[k-1])
		c.free = c.free[:k-1]
	} else {
		slot = c.evictLocked()
		if slot < 0 {
			return false
		}
	}
	c.ring[slot] = s
	s.slot = int32(slot) + 1
	c.used[slot].Store(true)
	return true
}

// evictLocked closes the descriptor of the least recently used node it
// can lock, and returns its slot; -1 when none can be.
func (c *dirCache) evictLocked() int {
	for range 2 * len(c.ring) {
		i := c.hand
		c.hand = (c.hand + 1) % len(c.ring)
		v := c.ring[i]
		if v == nil || c.used[i].Swap(false) {
			continue // a second chance
		}
		if !v.fdMu.TryLock() {
			continue
		}
		unix.Close(int(v.fd))
		v.hasFD = false
		v.slot = 0
		v.fdMu.Unlock()
		c.ring[i] = nil
		return i
	}
	return -1
}

// drop closes s's descriptor and frees its slot. The caller holds
// s.fdMu for writing and s has a descriptor.
func (c *dirCache) drop(s *nodeState) {
	unix.Close(int(s.fd))
	s.hasFD = false
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.slot > 0 {
		c.ring[s.slot-1] = nil
		c.free = append(c.free, s.slot-1)
		s.slot = 0
	}
}

// cached is the number of descriptors cached, for tests.
func (c *dirCache) cached() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ring) - len(c.free)
}

// touchFD marks s's cached descriptor as just used. It writes only when
// the bit is clear, so that lookups in one busy directory do not all
// write to the same cache line. The caller holds s.fdMu (read) and s has
// a descriptor, so s.slot is set and stays so (it changes only with
// s.fdMu held for writing).
func (s *nodeState) touchFD(c *dirCache) {
	if s.slot <= 0 {
		return
	}
	if u := &c.used[s.slot-1]; !u.Load() {
		u.Store(true)
	}
}
