package fusefs

// clamfuse: the request loop of Serve (block "request loop" of serve.go).

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// maxReaders bounds the goroutines that read requests and serve them
// inline; maxIdle is how many of them may wait, parked, to be the next
// reader; a reader finding more parked leaves.
const maxReaders, maxIdle = 16, 4

// handoverAfter is how long a request served inline may hold the reading
// before the watchdog hands it to another reader, for a request that
// blocks without saying so (Server.Blocking): a LOOKUP whose backing
// lstat waits for the disk, a FORGET waiting for a notification. The
// watchdog's kernel timer is armed for it when such a request starts, so
// the request holds up the others for handoverAfter and the time it takes
// the watchdog to be scheduled.
const handoverAfter = 500 * time.Microsecond

// parallelAfter: a request served inline that took at least this long
// makes the next readers look whether more requests wait (Conn.Pending)
// and, if so, hand the reading over at once, so that long requests (READs
// and WRITEs of a MiB, not in passthrough) are served in parallel, up to
// as many at once as there are CPUs. Shorter requests are served one after
// the other: waking another thread for one costs more than it takes. A
// request that said it waits (Server.Blocking: an open waiting for its
// scan) was long for waiting, not for working: it leaves the next ones
// as they were. (It did make them look, and on a sequential reader's
// first opens hand over once more in about every other file: the
// RELEASE of a file read with the LOOKUP of the next one queued behind
// it; with the runtime's own wake-ups that follow a hand-over, 1.8 more
// context switches per first open. TestWaitedRequestNotLong.)
const parallelAfter = 100 * time.Microsecond

// readLoop serves requests on the goroutine that read them, as libfuse's
// multithreaded loop does, instead of starting a goroutine per request:
// on a small machine the hand-off between goroutines cost more than most
// requests.
//
// One goroutine at a time waits in read(2) on /dev/fuse (the reader); it
// serves the request it gets inline and then reads again itself. The
// kernel wakes the waiter that slept longest, so with several waiting
// every request woke another, cold thread, and a request queued while the
// reader served another found nobody awake; with one, the thread that
// just answered takes the next request, often without sleeping at all.
// A request served inline hands the reading to another goroutine (a
// parked one, the most recently parked first, or a new one) as soon as
// it is about to wait (Server.Blocking: an open waiting for a scan), or
// when the watchdog finds it still served after handoverAfter; so a
// request that blocks never holds up the others for long, nor INTERRUPT.
// When it is done and another goroutine reads, it parks. Past maxReaders
// goroutines with none parked, the reader serves each request on a
// goroutine of its own, as upstream does for all, and keeps reading.
// While requests take long (parallelAfter), a reader that finds more of
// them waiting hands the reading over before it serves its own.
type readLoop struct {
	s       *Server
	readers sync.WaitGroup // the readers and the watchdog
	cpus    int            // the most requests served inline at once for being long

	// wd is the watchdog's timer (timerfd, CLOCK_MONOTONIC, non-blocking),
	// read by the watchdog through the runtime's poller; wdFd is its
	// descriptor, for arming and disarming it, only under mu and while
	// not closed (closeLocked closes wd).
	wd   *os.File
	wdFd int

	// mu guards all below.
	mu      sync.Mutex
	total   int            // readers: reading, serving or parked
	busy    int            // readers serving a request inline
	long    bool           // the last request served inline took parallelAfter or more (one that waited not counted)
	handed  []handed       // requests served inline that handed the reading over, until they end
	reading bool           // a reader is in (or on its way to) read(2)
	serving bool           // a request served inline has not handed the reading over
	seq     uint64         // requests served inline so far; the current one if serving
	id      fuse.RequestID // the request of seq, if serving
	parked  []chan bool    // parked readers, the last parked last; true: read, false: quit
	closed  bool           // the connection is gone
	err     error          // the first read error: io.EOF at unmount

	since   time.Time // when the request of seq started, if serving
	expiry  time.Time // when wd expires, at the latest; zero: disarmed
	wdFires int       // times the watchdog ran, for tests
	// ended, set by tests, is called at the end of each request served
	// inline but those that waited, with whether it counts as long.
	ended func(seq uint64, long bool)

	// releasing counts the RELEASEs of files read and not yet served
	// (Server.Releasing).
	releasing atomic.Int64
	// relMu guards relServed: closed when releasing drops to 0, made by
	// the first Server.ReleasesServed that finds it above 0. A leaf.
	relMu     sync.Mutex
	relServed chan struct{}
}

// released counts one RELEASE of a file served and, if it was the last
// one in flight, wakes who waits for that (Server.ReleasesServed).
func (l *readLoop) released() {
	if l.releasing.Add(-1) != 0 {
		return
	}
	l.relMu.Lock()
	if l.relServed != nil {
		close(l.relServed)
		l.relServed = nil
	}
	l.relMu.Unlock()
}

func (l *readLoop) run() error {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fusefs: the request loop's timer: timerfd_create: %w", err)
	}
	l.wdFd = fd
	l.wd = os.NewFile(uintptr(fd), "timerfd")
	l.cpus = runtime.NumCPU()
	l.mu.Lock()
	l.total = 1
	l.reading = true
	l.mu.Unlock()
	l.readers.Add(2)
	go l.watchdog()
	go l.read()
	l.readers.Wait()
	return l.err
}

// read is a reader: it reads while it has the reading, serves what it
// reads, and parks or leaves when another has taken the reading over.
func (l *readLoop) read() {
	defer l.readers.Done()
	for {
		req, err := l.s.conn.ReadRequest()
		if err != nil {
			// The connection is gone (io.EOF at unmount) or broken:
			// the loop ends.
			l.mu.Lock()
			if l.err == nil {
				l.err = err
			}
			l.closeLocked()
			l.total--
			l.mu.Unlock()
			return
		}
		if p, ok := req.(*fuse.PollRequest); ok {
			l.s.pollUnsupported(p)
			continue
		}
		rel := isFileRelease(req)
		if rel {
			l.releasing.Add(1)
		}
		l.mu.Lock()
		if l.total >= maxReaders && len(l.parked) == 0 {
			// Nobody could take the reading over: keep it.
			l.mu.Unlock()
			l.s.wg.Add(1)
			go func() {
				defer l.s.wg.Done()
				l.s.serveInTurn(req)
				if rel {
					l.released()
				}
			}()
			continue
		}
		l.reading = false
		l.serving = true
		l.seq++
		seq := l.seq
		l.id = req.Hdr().ID
		l.busy++
		l.armLocked()
		parallel := l.long && l.busy < l.cpus
		l.mu.Unlock()

		if parallel && l.s.conn.Pending() {
			l.mu.Lock()
			if l.serving && l.seq == seq {
				l.handoverLocked()
			}
			l.mu.Unlock()
		}
		start := time.Now()
		l.s.serveInTurn(req)
		took := time.Since(start)
		if rel {
			l.released()
		}

		l.mu.Lock()
		l.busy--
		if !l.endHandedLocked(seq) {
			l.long = took >= parallelAfter
			if l.ended != nil {
				l.ended(seq, l.long)
			}
		}
		if l.serving && l.seq == seq {
			// wd stays armed: the next request finds it so (armLocked),
			// and if none comes it expires once for nothing.
			l.serving = false
		}
		if !l.reading && !l.closed {
			l.reading = true
			l.mu.Unlock()
			continue
		}
		if l.closed || len(l.parked) >= maxIdle {
			l.total--
			l.mu.Unlock()
			return
		}
		wake := make(chan bool, 1)
		l.parked = append(l.parked, wake)
		l.mu.Unlock()
		if !<-wake {
			return // closeLocked counted it out
		}
	}
}

// handoverLocked gives the reading to another reader if the request
// served inline still holds it.
func (l *readLoop) handoverLocked() {
	if !l.serving || l.closed {
		return
	}
	l.handed = append(l.handed, handed{id: l.id, seq: l.seq})
	l.serving = false
	l.disarmLocked()
	l.reading = true
	if k := len(l.parked); k > 0 {
		wake := l.parked[k-1]
		l.parked[k-1] = nil
		l.parked = l.parked[:k-1]
		wake <- true
		return
	}
	// Not past maxReaders: the request was served inline only if a
	// reader could be started or woken now (read).
	l.total++
	l.readers.Add(1)
	go l.read()
}

// closeLocked ends the loop: the parked readers and the watchdog leave;
// the readers serving requests leave when done.
func (l *readLoop) closeLocked() {
	if l.closed {
		return
	}
	l.closed = true
	for _, wake := range l.parked {
		l.total--
		wake <- false
	}
	l.parked = nil
	l.expiry = time.Time{}
	l.wd.Close() // the watchdog's read fails: it leaves
}

// armLocked makes sure the watchdog's timer expires while the request
// that starts being served inline (seq) may still be served, and not
// before half of handoverAfter: the watchdog then hands the reading over
// from it once it has been served handoverAfter. Arming a kernel timer
// wakes nobody, and requests that follow each other closely arm it only
// once per half handoverAfter (arming costs a system call, and on a
// virtual machine the timer's reprogramming), without disarming it after
// each: it then expires for nothing once per lull. (A Go timer would not
// do: adding one to an idle runtime wakes a thread to wait for it.)
func (l *readLoop) armLocked() {
	if l.closed {
		return
	}
	now := time.Now()
	l.since = now
	if !l.expiry.IsZero() && !l.expiry.Before(now.Add(handoverAfter/2)) {
		return // it looks soon enough
	}
	if !l.setTimerLocked(now, handoverAfter) {
		l.handoverLocked() // never hold the reading unwatched
	}
}

// disarmLocked stops the watchdog's timer, if armed: no request served
// inline holds the reading any more.
func (l *readLoop) disarmLocked() {
	if l.expiry.IsZero() || l.closed {
		return
	}
	l.setTimerLocked(time.Time{}, 0)
}

// setTimerLocked arms wd to expire once, d after now, or disarms it if d
// is 0. It reports false if it could not, which a valid descriptor and
// time never cause; wd is then disarmed, or expires before l.expiry.
func (l *readLoop) setTimerLocked(now time.Time, d time.Duration) bool {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(l.wdFd, 0, &spec, nil); err != nil {
		return false
	}
	l.expiry = time.Time{}
	if d > 0 {
		// At or before the kernel's own expiry: now was read first.
		l.expiry = now.Add(d)
	}
	return true
}

// watchdog hands the reading over from a request served inline for
// handoverAfter: it waits for the timer armLocked arms (wd) to expire,
// looks, and arms it again for the rest of handoverAfter if the request
// it finds has not been served that long. It leaves when wd is closed.
func (l *readLoop) watchdog() {
	defer l.readers.Done()
	var b [8]byte // the count of expirations
	for {
		if _, err := l.wd.Read(b[:]); err != nil {
			return // closed (closeLocked)
		}
		l.mu.Lock()
		l.wdFires++
		now := time.Now()
		switch {
		case l.closed:
		case !l.expiry.IsZero() && l.expiry.After(now):
			// Armed anew after it expired: it expires again.
		case !l.serving:
			l.expiry = time.Time{}
		default:
			left := handoverAfter - now.Sub(l.since)
			if left <= 0 || !l.setTimerLocked(now, left) {
				l.handoverLocked()
			}
		}
		l.mu.Unlock()
	}
}

// Blocking tells the request loop that the request id is about to wait
// (for a scan, a slot, another request): if it was served on the
// goroutine that reads the requests, another goroutine reads them from
// now on, so the others, and an INTERRUPT of this one, are read at once.
// The request gives its user's turn back meanwhile (SetTurns); Unblocked
// must follow when it goes on. Cheap and harmless for any other request.
func (s *Server) Blocking(id fuse.RequestID) {
	s.lendTurn(id)
	s.handOver(id)
}

// handOver gives the reading to another goroutine if the request id is
// served on the one that reads (Blocking).
func (s *Server) handOver(id fuse.RequestID) {
	l := s.loop
	if l == nil {
		return
	}
	l.mu.Lock()
	if l.serving && l.id == id {
		l.handoverLocked()
	}
	// Handed over now, or before by the watchdog: it waits all the same.
	for i := range l.handed {
		if l.handed[i].id == id {
			l.handed[i].waited = true
		}
	}
	l.mu.Unlock()
}

// handed is a request served inline that handed the reading over (for
// waiting, or by the watchdog), and whether it said it waits.
type handed struct {
	id     fuse.RequestID
	seq    uint64
	waited bool
}

// endHandedLocked forgets the request seq, served inline, if it handed
// the reading over, and reports whether it said it waits (Blocking).
func (l *readLoop) endHandedLocked(seq uint64) bool {
	for i, h := range l.handed {
		if h.seq == seq {
			l.handed = append(l.handed[:i], l.handed[i+1:]...)
			return h.waited
		}
	}
	return false
}

// isFileRelease reports whether req is the RELEASE of a file.
func isFileRelease(req fuse.Request) bool {
	r, ok := req.(*fuse.ReleaseRequest)
	return ok && !r.Dir
}

// Releasing is the number of RELEASEs of files that the loop has read
// from the kernel and not served yet. The kernel sends a RELEASE in the
// background, after the close(2) that caused it has returned, and the
// loop may serve it beside requests read after it: a request that must
// see the closes made before it was sent (an open that another open of
// the file would refuse) waits while this is not 0.
func (s *Server) Releasing() int64 {
	if l := s.loop; l != nil {
		return l.releasing.Load()
	}
	return 0
}

// ReleasesServed returns a channel closed once no RELEASE of a file read
// from the kernel is left unserved (Releasing is 0), or nil if none is
// now.
func (s *Server) ReleasesServed() <-chan struct{} {
	l := s.loop
	if l == nil {
		return nil
	}
	l.relMu.Lock()
	defer l.relMu.Unlock()
	if l.releasing.Load() == 0 {
		return nil
	}
	if l.relServed == nil {
		l.relServed = make(chan struct{})
	}
	return l.relServed
}
