package fusefs

// clamfuse: serveNode's wait group in 8 bytes (block "serve node wait
// group" in serve.go).
//
// Upstream's serveNode holds a sync.WaitGroup (16 bytes), which makes it
// 56 bytes, allocated in the 64-byte class, for every inode the kernel
// caches. A nodeWaitGroup is the count alone: serveNode is then 48 bytes,
// in the 48-byte class (TestServeNodeSize). Waiting is rare (a node
// forgotten while a notification about it is being written, see
// Server.dropNode), so all of them share one condition.

import (
	"sync"
	"sync/atomic"
)

// nodeWaitGroup is the part of sync.WaitGroup serveNode uses: Add, Done
// and Wait, with the same rules.
type nodeWaitGroup struct {
	n atomic.Int64
}

var (
	nodeWaitMu      sync.Mutex // guards nothing but nodeWaitCond's waits
	nodeWaitCond    = sync.NewCond(&nodeWaitMu)
	nodeWaitWaiters atomic.Int64 // goroutines in Wait with a count not zero
)

func (w *nodeWaitGroup) Add(delta int) {
	if w.n.Add(int64(delta)) < 0 {
		panic("fusefs: negative nodeWaitGroup counter")
	}
}

// Done wakes the waiters once the count reaches zero, if there are any:
// a waiter counts itself, under nodeWaitMu, before it reads the count, so
// either it reads zero or Done sees it and broadcasts under the lock it
// holds until it waits.
func (w *nodeWaitGroup) Done() {
	switch v := w.n.Add(-1); {
	case v < 0:
		panic("fusefs: negative nodeWaitGroup counter")
	case v == 0 && nodeWaitWaiters.Load() > 0:
		nodeWaitMu.Lock()
		nodeWaitCond.Broadcast()
		nodeWaitMu.Unlock()
	}
}

// Wait returns once the count is zero.
func (w *nodeWaitGroup) Wait() {
	if w.n.Load() == 0 {
		return
	}
	nodeWaitMu.Lock()
	defer nodeWaitMu.Unlock()
	nodeWaitWaiters.Add(1)
	defer nodeWaitWaiters.Add(-1)
	for w.n.Load() != 0 {
		nodeWaitCond.Wait()
	}
}
