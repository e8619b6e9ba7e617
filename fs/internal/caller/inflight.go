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
//
// A request waiting for its turn holds memory of clamfuse's: its
// goroutine and the request as read (8 KiB in all, about 50 KiB in a
// build with -race), and the data of a WRITE served by clamfuse (up to
// 1 MiB) or a SETXATTR; and a user has as many waiting as threads
// calling into the mount (thousands: 6000 grew clamfuse by 184 MiB, in
// a build with -race). So one user's waiting requests are bounded too,
// in number (MaxWaiting) and in the data they carry (MaxWaitingBytes,
// each charged what its caller says it carries); past either a request
// is refused at once (Queue), and the caller answers it with an error.
// The bounds are far above what a busy user's bursts wait for (Samba's
// 100 asynchronous I/O threads of a connection writing 1 MiB each: 36
// waiting, 36 MiB), so that only a user whose turns are held up for long
// meets them.

// MaxInFlight is the most requests of one user served at once.
const MaxInFlight = 64

// MaxWaiting is the most requests of one user waiting for a turn, and
// MaxWaitingBytes the most data they may carry in all (Queue).
const MaxWaiting, MaxWaitingBytes = 1024, 64 << 20

var inflight = struct {
	mu    sync.Mutex
	users map[uint32]*load
}{users: map[uint32]*load{}}

// load is a user's calls in flight and those waiting for a turn.
type load struct {
	n     int
	wait  []waiter
	bytes int // carried by those waiting
}

// waiter is a request waiting for a turn, carrying bytes of data: Leave
// closes turn to hand it one.
type waiter struct {
	turn  chan struct{}
	bytes int
}

// Enter waits until user uid may have one more request served, and
// counts it; Leave must follow once it is done. Never nested: a request
// holds one turn at most. Its wait is not bounded (MaxWaiting): for a
// request already in flight (one that gave its turn back while it waited
// for something else).
func Enter(uid uint32) {
	if turn, _ := queue(uid, 0, false); turn != nil {
		<-turn // Leave handed its turn over
	}
}

// Queue is Enter for a request that carries bytes of data: it takes a
// turn of uid at once (nil, true), or puts the request in line and
// returns a channel that Leave closes when it hands it a turn (turn,
// true), or, if uid's waiting requests would then be more than
// MaxWaiting or carry more than MaxWaitingBytes, refuses it (nil,
// false).
func Queue(uid uint32, bytes int) (turn <-chan struct{}, ok bool) {
	return queue(uid, bytes, true)
}

// queue is Queue, bounded or not.
func queue(uid uint32, bytes int, bounded bool) (chan struct{}, bool) {
	if uid == 0 {
		return nil, true
	}
	inflight.mu.Lock()
	defer inflight.mu.Unlock()
	l, ok := takeLocked(uid)
	if ok {
		return nil, true
	}
	if bounded && (len(l.wait) >= MaxWaiting || l.bytes+bytes > MaxWaitingBytes) {
		return nil, false
	}
	w := waiter{turn: make(chan struct{}), bytes: bytes}
	l.wait = append(l.wait, w)
	l.bytes += bytes
	return w.turn, true
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
		w := l.wait[0]
		l.wait[0] = waiter{}
		l.wait = l.wait[1:]
		l.bytes -= w.bytes
		close(w.turn)
		return
	}
	if l.n--; l.n == 0 {
		delete(inflight.users, uid)
	}
}

// InFlight returns the turns of uid held and waited for, and the bytes
// those waiting carry, for tests.
func InFlight(uid uint32) (n, waiting, bytes int) {
	inflight.mu.Lock()
	defer inflight.mu.Unlock()
	if l := inflight.users[uid]; l != nil {
		return l.n, len(l.wait), l.bytes
	}
	return 0, 0, 0
}
