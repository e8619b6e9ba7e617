package fs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

func TestProcSignals(t *testing.T) {
	status := "Name:\tcat\nSigQ:\t1/94772\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000004000\n" +
		"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000004\nSigCgt:\tfffffffe7ffbfeff\nCapInh:\t0000000000000000\n"
	got := procSignals([]byte(status))
	want := map[string]uint64{"SigPnd": 0x100, "ShdPnd": 0x4000, "SigBlk": 0, "SigIgn": 4, "SigCgt": 0xfffffffe7ffbfeff}
	if len(got) != len(want) {
		t.Fatalf("procSignals = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("procSignals[%s] = %#x, want %#x", k, got[k], v)
		}
	}
}

func TestDying(t *testing.T) {
	if dying(uint32(os.Getpid())) {
		t.Errorf("dying(self) = true; this process has no fatal signal pending")
	}
	if !dying(1 << 30) {
		t.Errorf("dying(no such thread) = false, want true")
	}
}

func TestFatalPending(t *testing.T) {
	const (
		kill = 1 << 8  // SIGKILL
		term = 1 << 14 // SIGTERM
		urg  = 1 << 22 // SIGURG
		chld = 1 << 16 // SIGCHLD
	)
	for _, tc := range []struct {
		name string
		st   map[string]uint64
		want bool
	}{
		{"nothing pending", map[string]uint64{}, false},
		{"SIGKILL in the thread", map[string]uint64{"SigPnd": kill, "SigCgt": ^uint64(0)}, true},
		{"SIGKILL shared", map[string]uint64{"ShdPnd": kill}, true},
		{"SIGTERM not caught", map[string]uint64{"ShdPnd": term}, true},
		{"SIGTERM caught", map[string]uint64{"ShdPnd": term, "SigCgt": term}, false},
		{"SIGTERM ignored", map[string]uint64{"ShdPnd": term, "SigIgn": term}, false},
		{"SIGTERM blocked", map[string]uint64{"SigPnd": term, "SigBlk": term}, false},
		{"SIGURG not caught", map[string]uint64{"SigPnd": urg}, false},
		{"SIGCHLD not caught", map[string]uint64{"ShdPnd": chld}, false},
	} {
		if got := fatalPending(tc.st); got != tc.want {
			t.Errorf("%s: fatalPending = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWaitCtx: the wait of an open ends only when its request was
// interrupted and the opener is dying; it costs nothing until waited on;
// end stops the watch.
func TestWaitCtx(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name        string
		interrupted bool
		dying       bool
		wantDone    bool
	}{
		{"not interrupted, dying", false, true, false},
		{"interrupted, not dying", true, false, false},
		{"interrupted, dying", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, cancel := context.WithCancel(context.Background())
			defer cancel()
			var looks atomic.Int32
			c := &waitCtx{Context: req, log: log, tid: 1, dying: func(uint32) bool { looks.Add(1); return tc.dying }}
			done := c.Done()
			if tc.interrupted {
				cancel()
			}
			if tc.wantDone {
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Fatal("the wait of a dying opener did not end")
				}
				if c.Err() != context.Canceled {
					t.Errorf("Err = %v, want context.Canceled", c.Err())
				}
			} else {
				if tc.interrupted {
					// Looked at least twice: still waiting after a look.
					deadline := time.Now().Add(time.Minute)
					for looks.Load() < 2 && time.Now().Before(deadline) {
						time.Sleep(interruptPoll)
					}
				}
				select {
				case <-done:
					t.Fatal("the wait ended; want it to go on")
				default:
				}
				if c.Err() != nil {
					t.Errorf("Err = %v, want nil", c.Err())
				}
			}
			c.end()
			select {
			case <-c.ended: // what the watch's loop ends on
			default:
				t.Error("end left the watch running")
			}
			if !tc.interrupted && c.stop() {
				t.Error("end left the watch of the request's context armed")
			}
		})
	}
	t.Run("never waited on", func(t *testing.T) {
		c := &waitCtx{Context: context.Background(), log: log, dying: func(uint32) bool { t.Error("looked"); return true }}
		c.end()
		if c.done != nil || c.stop != nil {
			t.Error("end of a context never waited on made a watch")
		}
		if c.Err() != nil {
			t.Errorf("Err = %v", c.Err())
		}
	})
}

// TestWaitCtxTellsBlocking: the first Done of an open's wait tells the
// request loop that the open is about to wait (fusefs.Server.Blocking, so
// that another goroutine reads the next requests), once; an open decided
// without waiting never does.
func TestWaitCtxTellsBlocking(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name  string
		dones int
		want  int
	}{
		{"decided from the cache", 0, 0},
		{"waits", 1, 1},
		{"waits twice", 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loop := &fakeLoop{}
			c := &waitCtx{Context: context.Background(), log: log, dying: func(uint32) bool { return false }, loop: loop, id: 7}
			for range tc.dones {
				_ = c.Done()
			}
			c.end()
			if len(loop.told) != tc.want || tc.want > 0 && loop.told[0] != 7 {
				t.Errorf("Blocking told %v, want request 7 %d times", loop.told, tc.want)
			}
			// Each Blocking is followed by one Unblocked, at the end.
			if !slices.Equal(loop.unblocked, loop.told) {
				t.Errorf("Unblocked told %v; want %v", loop.unblocked, loop.told)
			}
		})
	}
}

// fakeLoop records what Blocking and Unblocked were told, and calls
// onTold.
type fakeLoop struct {
	told      []fuse.RequestID
	unblocked []fuse.RequestID
	onTold    func(fuse.RequestID)
}

func (l *fakeLoop) Unblocked(id fuse.RequestID) { l.unblocked = append(l.unblocked, id) }

func (l *fakeLoop) Blocking(id fuse.RequestID) {
	l.told = append(l.told, id)
	if l.onTold != nil {
		l.onTold(id)
	}
}

// TestWaitCtxLetsGoOfDir: an open decided without waiting keeps the
// node's descriptor of its directory until the open is done, and makes
// no copy of it (openDir); one that waits lets go of it at its first
// Done, before blocking, once, and keeps a copy of the same directory
// for the actions on a detection, closed when the open is done.
func TestWaitCtxLetsGoOfDir(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		dones  int
		copied bool
	}{
		{"decided from the cache", 0, false},
		{"waits", 1, true},
		{"waits twice", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			released, releasedFirst := 0, false
			loop := &fakeLoop{onTold: func(fuse.RequestID) { releasedFirst = released == 1 }}
			c := &waitCtx{Context: context.Background(), log: log, dying: func(uint32) bool { return false }, loop: loop}
			c.dir = openDir{fd: node, name: "f", release: func() { released++; unix.Close(node) }}
			for range tc.dones {
				_ = c.Done()
			}
			c.end()
			d := c.dir
			if tc.dones > 0 && !releasedFirst {
				t.Errorf("Blocking told before the directory was let go of")
			}
			if want := min(tc.dones, 1); released != want {
				t.Errorf("released %d times before the open was done, want %d", released, want)
			}
			if d.copied != tc.copied {
				t.Errorf("copied %v, want %v", d.copied, tc.copied)
			}
			fd, name := d.at()
			var a, b unix.Stat_t
			if err := unix.Fstat(fd, &a); err != nil || unix.Stat(dir, &b) != nil || a.Ino != b.Ino || name != "f" {
				t.Errorf("the actions' directory: fd %d (%v), name %q; want %s, \"f\"", fd, err, name, dir)
			}
			d.done()
			d.done()
			if released != 1 {
				t.Errorf("released %d times in all, want 1", released)
			}
			if tc.copied {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
					t.Errorf("the copy is still open after done: %v", err)
				}
			}
		})
	}
}

// TestWaitCtxAfterFunc: contexts made from an open's wait (the gate scans
// under one, with its deadline) watch it without a goroutine each
// (waitCtx.AfterFunc, which package context looks for), are done with it
// when the opener is dying, and let go of it when cancelled first.
func TestWaitCtxAfterFunc(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	req, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	var dying atomic.Bool
	c := &waitCtx{Context: req, log: log, tid: 1, dying: func(uint32) bool { return dying.Load() }}
	defer c.end()

	const n = 50
	before := runtime.NumGoroutine()
	var kids []context.Context
	for range n {
		kid, cancel := context.WithDeadline(c, time.Now().Add(time.Hour))
		defer cancel()
		kids = append(kids, kid)
	}
	if grew := runtime.NumGoroutine() - before; grew >= n {
		t.Errorf("%d contexts made from the wait started %d goroutines; want none each", n, grew)
	}
	// One cancelled first lets go of the wait.
	gone, cancel := context.WithCancel(c)
	cancel()
	c.mu.Lock()
	if len(c.afters) != n {
		t.Errorf("%d functions registered on the wait; want %d (the cancelled context's removed)", len(c.afters), n)
	}
	c.mu.Unlock()

	interrupt()
	for _, kid := range kids {
		select {
		case <-kid.Done():
			t.Fatal("a context made from the wait ended at an interrupt alone")
		default:
		}
	}
	dying.Store(true)
	for i, kid := range kids {
		select {
		case <-kid.Done():
		case <-time.After(time.Minute):
			t.Fatalf("context %d made from the wait of a dying opener not done", i)
		}
		if kid.Err() != context.Canceled {
			t.Errorf("context %d: Err = %v; want context.Canceled", i, kid.Err())
		}
	}
	if gone.Err() != context.Canceled {
		t.Errorf("the context cancelled first: Err = %v", gone.Err())
	}
	// Made after the opener died: done at once.
	late, cancel := context.WithCancel(c)
	defer cancel()
	select {
	case <-late.Done():
	case <-time.After(time.Minute):
		t.Fatal("a context made from the wait of a dead opener not done")
	}
}
