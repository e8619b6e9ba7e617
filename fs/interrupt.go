package fs

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// An open that waits for a scan is interrupted by the kernel (FUSE
// INTERRUPT, which cancels the request's context) whenever a signal comes
// to the opener, caught or not: a timer, a child's exit, the Go runtime's
// own preemption signal (SIGURG) many times a second. Answering EINTR
// then would fail an open(2) that the program expects the kernel to
// restart (SA_RESTART; FUSE cannot reply ERESTARTSYS), and fsx, like most
// programs, does not retry an open of a regular file. A local filesystem
// does not fail an open for a caught signal either. So the wait goes on
// through such interrupts, and ends early only when the opener is dying:
// a fatal signal is pending (the kernel then waits for clamfuse's answer
// uninterruptibly, and the process cannot exit before it), or it is gone.
// Every wait still ends within clamd.timeout.

// interruptPoll is how often an interrupted wait looks at the opener
// again: the kernel sends INTERRUPT once per request, so a fatal signal
// that comes after a caught one is seen only by looking.
const interruptPoll = 20 * time.Millisecond

// untilDying returns the context the open request hdr (of thread
// hdr.Pid) waits for its verdict under: done once ctx is (the request was
// interrupted) and the opener is dying. Call end when the gate has
// decided. It costs one allocation until something waits on it: an open
// decided from the cache never does (the gate selects on Done only to
// wait: for a scan, a scan slot, a racy file to settle). The first Done
// tells the request loop that the request is about to wait
// (fusefs.Server.Blocking), so that another goroutine reads the next
// requests, and this one's INTERRUPT; before that, it lets go of the
// open's directory (dir, see openDir).
func (f *FS) untilDying(ctx context.Context, hdr *fuse.Header) *waitCtx {
	c := &waitCtx{Context: ctx, log: f.log, tid: hdr.Pid, dying: dying, id: hdr.ID}
	if f.srv != nil {
		c.loop = f.srv // not a closure: no allocation of its own
	}
	return c
}

// requestLoop is told that a request is about to wait
// (fusefs.Server.Blocking).
type requestLoop interface {
	Blocking(fuse.RequestID)
	Unblocked(fuse.RequestID)
}

// waitCtx is the context of untilDying. Its channel, and the watch of the
// request's context, are made at the first Done.
type waitCtx struct {
	context.Context // the request's: its values and deadline
	log             *slog.Logger
	tid             uint32
	dying           func(tid uint32) bool
	loop            requestLoop    // told at the first Done that request id waits, if not nil
	id              fuse.RequestID // the open's request
	dir             openDir        // the open's directory: let go of at the first Done, before blocking (openDir.letGo)

	once  sync.Once
	done  chan struct{} // closed when the opener is dying
	ended chan struct{} // closed by end
	stop  func() bool   // the watch of the request's context
	gone  atomic.Bool   // done is closed, or about to be

	mu     sync.Mutex   // guards afters; a leaf
	afters []*afterFunc // see AfterFunc
}

// afterFunc is one function of waitCtx.AfterFunc.
type afterFunc struct{ f func() }

// AfterFunc arranges for f to be called, in a goroutine of its own, once
// c is done (the opener is dying), unless stop is called first; stop
// reports whether it stopped f. With it, a context made from c (the
// gate's scan runs under one, with its deadline) watches c without a
// goroutine of its own: package context looks for this method.
func (c *waitCtx) AfterFunc(f func()) (stop func() bool) {
	c.Done() // the watch starts
	a := &afterFunc{f: f}
	c.mu.Lock()
	if c.gone.Load() {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.afters = append(c.afters, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.afters {
			if x == a {
				c.afters = append(c.afters[:i], c.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (c *waitCtx) Done() <-chan struct{} {
	c.once.Do(c.start)
	return c.done
}

func (c *waitCtx) Err() error {
	if c.gone.Load() {
		return context.Canceled
	}
	return nil
}

func (c *waitCtx) start() {
	c.dir.letGo()
	if c.loop != nil {
		c.loop.Blocking(c.id)
	}
	c.done, c.ended = make(chan struct{}), make(chan struct{})
	c.stop = context.AfterFunc(c.Context, func() {
		c.log.Debug("open interrupted while it waits for a verdict; it waits on unless the opener dies", "pid", c.tid)
		t := time.NewTicker(interruptPoll)
		defer t.Stop()
		for {
			if c.dying(c.tid) {
				c.log.Debug("opener dying: its open gives up the wait", "pid", c.tid)
				c.mu.Lock()
				c.gone.Store(true)
				afters := c.afters
				c.afters = nil
				c.mu.Unlock()
				close(c.done)
				for _, a := range afters {
					go a.f()
				}
				return
			}
			select {
			case <-c.ended:
				return
			case <-t.C:
			}
		}
	})
}

// end ends the watch, if Done started one; nothing may wait on c after.
func (c *waitCtx) end() {
	c.once.Do(func() {}) // no watch starts from now on
	if c.stop != nil {
		c.stop()
		close(c.ended)
		if c.loop != nil {
			c.loop.Unblocked(c.id) // its user's turn again (fusefs.Server.SetTurns)
		}
	}
}

// dying reports whether thread tid has a signal pending that will end
// its process: SIGKILL (which the kernel also queues to every thread for
// any fatal signal not dumping core), or a signal neither caught, ignored
// nor blocked whose default action is to terminate; or whether it is
// gone.
func dying(tid uint32) bool {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return true // gone (or not in our pid namespace: nothing to wait for)
	}
	return fatalPending(procSignals(b))
}

// fatalPending reports whether the signal masks st of a thread (see
// procSignals) show a signal pending that ends its process.
func fatalPending(st map[string]uint64) bool {
	pending := st["SigPnd"] | st["ShdPnd"]
	if pending&sigbit(unix.SIGKILL) != 0 {
		return true
	}
	fatal := pending &^ (st["SigBlk"] | st["SigIgn"] | st["SigCgt"]) &^ harmless
	return fatal != 0
}

// harmless are the signals whose default action does not end a process.
var harmless = sigbit(unix.SIGCHLD) | sigbit(unix.SIGURG) | sigbit(unix.SIGWINCH) |
	sigbit(unix.SIGCONT) | sigbit(unix.SIGSTOP) | sigbit(unix.SIGTSTP) |
	sigbit(unix.SIGTTIN) | sigbit(unix.SIGTTOU)

func sigbit(s unix.Signal) uint64 { return 1 << (uint(s) - 1) }

// procSignals parses the signal masks of a /proc/PID/status.
func procSignals(b []byte) map[string]uint64 {
	m := make(map[string]uint64, 5)
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) != 6 || !bytes.HasPrefix(k, []byte("Sig")) && !bytes.HasPrefix(k, []byte("Shd")) {
			continue
		}
		if n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64); err == nil {
			m[string(k)] = n
		}
	}
	return m
}
