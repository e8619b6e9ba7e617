package caller

import "sync"

// A request clamfuse serves for a user (a lookup, open, create, rename,
// listing, write: through the backing directory) waits in the kernel,
// uninterruptibly, for as long as another process holds a lock it needs,
// and holds one of clamfuse's threads meanwhile. Any user who can read a
// backing directory directly can hold its lock for as long as they like
// (getdents(2) into memory mapped from a file of their own FUSE
// filesystem that does not answer the page fault); a create through the
// mount in each of thousands of such directories then held as many
// threads, until clamfuse hit its task limit and died, its mount with it.
// So each user but root has at most MaxInFlight requests served at once
// (fusefs.Server.SetTurns calls Enter and Leave); the next ones wait, on
// a goroutine and not a thread, until one is done. Root's are not
// bounded: the kernel's own writeback comes as root, and the kernel
// bounds those requests itself (max_background).

// MaxInFlight is the most requests of one user served at once.
const MaxInFlight = 64

var inflight = struct {
	mu    sync.Mutex
	users map[uint32]*load
}{users: map[uint32]*load{}}

// load is a user's calls in flight and those waiting for a turn.
type load struct {
	n    int
	wait []chan struct{}
}

// Enter waits until user uid may have one more request served, and
// counts it; Leave must follow once it is done. Never nested: a request
// holds one turn at most.
func Enter(uid uint32) {
	if uid == 0 {
		return
	}
	inflight.mu.Lock()
	l, ok := takeLocked(uid)
	if ok {
		inflight.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	l.wait = append(l.wait, ch)
	inflight.mu.Unlock()
	<-ch // Leave handed its turn over
}

// TryEnter is Enter if uid need not wait for a turn, and reports
// whether it took one.
func TryEnter(uid uint32) bool {
	if uid == 0 {
		return true
	}
	inflight.mu.Lock()
	defer inflight.mu.Unlock()
	_, ok := takeLocked(uid)
	return ok
}

// takeLocked counts a turn of uid if one is free, and returns uid's
// load; inflight.mu is held.
func takeLocked(uid uint32) (*load, bool) {
	l := inflight.users[uid]
	if l == nil {
		l = &load{}
		inflight.users[uid] = l
	}
	if l.n < MaxInFlight {
		l.n++
		return l, true
	}
	return l, false
}

// Leave ends a turn of uid counted by Enter, handing it to the first
// one waiting, if any.
func Leave(uid uint32) {
	if uid == 0 {
		return
	}
	inflight.mu.Lock()
	defer inflight.mu.Unlock()
	l := inflight.users[uid]
	if len(l.wait) > 0 {
		close(l.wait[0])
		l.wait = l.wait[1:]
		return
	}
	if l.n--; l.n == 0 {
		delete(inflight.users, uid)
	}
}

// InFlight returns the turns of uid held and waited for, for tests.
func InFlight(uid uint32) (n, waiting int) {
	inflight.mu.Lock()
	defer inflight.mu.Unlock()
	if l := inflight.users[uid]; l != nil {
		return l.n, len(l.wait)
	}
	return 0, 0
}
