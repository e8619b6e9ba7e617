package fs

import (
	"sync"
	"time"
)

// A notification is a write to /dev/fuse that waits, uninterruptibly, for
// the kernel's lock of what it invalidates: an entry's, its directory's
// (i_rwsem, exclusive). Any process that may list a directory can hold
// that lock for as long as it likes: getdents(2) into a buffer mapped
// from a file of a FUSE filesystem of its own (fusermount3) that does not
// answer the page fault holds the directory's lock, shared, until it
// does. With one goroutine sending every notification, one such
// directory with a change queued for it stalled every invalidation of
// the mount behind it: for everyone, changes made behind the mount
// stopped showing, for up to mount.watched_attr_timeout (an hour).
//
// So the notifier sends each notification through a guard: a writer
// goroutine makes the write while the notifier waits, for stallAfter at
// most. A write still waiting then is left to its writer, which is from
// then on that notification's alone, and a new writer takes the next
// ones. While a notification of a node (the directory of an entry, the
// inode of attributes or data) waits so, the later ones of that node are
// put aside, in order (they would wait for the same lock), and handed
// back to the notifier once it is sent. At most maxStalled writers wait
// at once (each holds a thread, blocked in the kernel); past that the
// notifier waits for its writer as it did before. Notifications of other
// nodes go on.

// stallAfter is how long the notifier waits for one notification before
// it leaves it to its writer. A notification takes microseconds; one
// waiting for a request being served (the kernel holds a directory's
// lock over a CREATE in it) takes what that request takes.
const stallAfter = 100 * time.Millisecond

// maxStalled bounds the writers left waiting at once.
const maxStalled = 16

// maxAside bounds the notifications put aside for one stalled node; past
// it they are dropped, and everything is invalidated once the node's
// notification is sent (guard.overflowed).
const maxAside = 4096

// guard runs the notifier's notifications (see above). Only the
// notifier calls do and takeBack; the writers left waiting report to it
// under mu.
type guard struct {
	stallAfter time.Duration
	wake       func() // wakes the notifier: a stalled notification was sent
	stalled    func(key *Node)

	cur   *writer     // the writer of the next notification; nil until the first
	timer *time.Timer // the notifier's, for stallAfter

	mu       sync.Mutex         // guards all below
	aside    map[*Node]*asideOf // stalled nodes and what waits behind their notification
	back     []putAside         // put aside, and now to be sent (takeBack)
	overflow bool               // something put aside was dropped, and its node's notification sent
	nwaiting int                // writers left waiting
}

// asideOf is what was put aside behind a stalled node's notification.
type asideOf struct {
	fs      []func()
	dropped bool // past maxAside
}

// writer is a goroutine that makes the notifier's writes, one at a time.
type writer struct {
	jobs chan job
	left bool // the notifier left its job waiting (under guard.mu)
}

type job struct {
	key  *Node
	f    func()
	done chan struct{}
}

func newGuard(wake func(), stalled func(key *Node)) *guard {
	return &guard{
		stallAfter: stallAfter,
		wake:       wake,
		stalled:    stalled,
		aside:      map[*Node]*asideOf{},
	}
}

// do runs f, a notification of key, on the writer, and returns once it
// is done, or once it has waited stallAfter (it then goes on waiting on
// its own), or at once if a notification of key still waits (f is then
// put aside until that one is done).
func (g *guard) do(key *Node, f func()) {
	g.mu.Lock()
	if a := g.aside[key]; a != nil {
		if len(a.fs) < maxAside {
			a.fs = append(a.fs, f)
		} else {
			a.dropped = true
		}
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	if g.cur == nil {
		g.cur = g.newWriter()
	}
	w := g.cur
	done := make(chan struct{})
	w.jobs <- job{key: key, f: f, done: done}
	if g.timer == nil {
		g.timer = time.NewTimer(g.stallAfter)
	} else {
		g.timer.Reset(g.stallAfter)
	}
	select {
	case <-done:
		g.timer.Stop()
		return
	case <-g.timer.C:
	}
	g.mu.Lock()
	select {
	case <-done: // just now
		g.mu.Unlock()
		return
	default:
	}
	if g.nwaiting >= maxStalled {
		g.mu.Unlock()
		<-done // no more threads for waiting writers: wait, as before the guard
		return
	}
	w.left = true
	g.nwaiting++
	g.aside[key] = &asideOf{}
	g.cur = g.newWriter()
	g.mu.Unlock()
	g.stalled(key)
}

// newWriter starts a writer.
func (g *guard) newWriter() *writer {
	w := &writer{jobs: make(chan job, 1)}
	go g.write(w)
	return w
}

// write runs w's jobs until one is left waiting; that one's writer then
// hands back what was put aside behind it, and ends.
func (g *guard) write(w *writer) {
	for j := range w.jobs {
		j.f()
		g.mu.Lock()
		if !w.left {
			g.mu.Unlock()
			close(j.done)
			continue
		}
		a := g.aside[j.key]
		delete(g.aside, j.key)
		g.nwaiting--
		if len(a.fs) > 0 {
			g.back = append(g.back, putAside{j.key, a.fs})
		}
		g.overflow = g.overflow || a.dropped
		g.mu.Unlock()
		close(j.done)
		g.wake()
		return
	}
}

// putAside are the notifications of key put aside behind its stalled
// one, in order.
type putAside struct {
	key *Node
	fs  []func()
}

// takeBack returns the notifications put aside whose node's stalled one
// was sent since, and whether any of them were dropped (maxAside): then
// everything must be invalidated.
func (g *guard) takeBack() (back []putAside, dropped bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	back, g.back = g.back, nil
	dropped, g.overflow = g.overflow, false
	return back, dropped
}

// waiting returns the number of notifications left waiting.
func (g *guard) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nwaiting
}

// stop ends the writer that waits for jobs; writers left waiting end
// when their write returns.
func (g *guard) stop() {
	if g.cur != nil {
		close(g.cur.jobs)
		g.cur = nil
	}
}
