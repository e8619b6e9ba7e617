package fusefs

// Mounted tests of the request loop (clamfuse_readloop.go): one reader
// serves requests inline, and a request that blocks hands the reading
// over, whether it says so (Server.Blocking) or not (the watchdog).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// blockingFile is a file whose opens wait until release is closed or the
// open is interrupted (EINTR then), telling the server first that they
// will wait if announce is set.
type blockingFile struct {
	*memFile
	srv      *atomic.Pointer[Server] // set once mounted
	announce bool
	release  chan struct{}

	waiting, interrupted atomic.Int32
}

func (f *blockingFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (Handle, error) {
	if f.announce {
		f.srv.Load().Blocking(req.Header.ID)
	}
	f.waiting.Add(1)
	defer f.waiting.Add(-1)
	select {
	case <-f.release:
		return f.memFile, nil
	case <-ctx.Done():
		f.interrupted.Add(1)
		return nil, syscall.EINTR
	}
}

// within fails the test, aborting the mount, if cond is not true within
// a minute; it polls.
func within(t *testing.T, m *mounted, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			abort(t, m.dir)
			t.Fatalf("%s: not within a minute; the connection was aborted", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBlockedRequestsHandReadingOver: opens that block, more of them than
// maxReaders, whether they announce it (Server.Blocking) or not (the
// watchdog hands over), leave the other requests served, and an INTERRUPT
// of one of them still reaches it.
func TestBlockedRequestsHandReadingOver(t *testing.T) {
	for _, tc := range []struct {
		name     string
		announce bool
	}{
		{"announced", true},
		{"silent", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := newMemFS()
			var srv atomic.Pointer[Server]
			slow := &blockingFile{memFile: fsys.root.file("slow", []byte("slow")), srv: &srv, announce: tc.announce, release: make(chan struct{})}
			fsys.root.mu.Lock()
			fsys.root.entries["slow"] = slow
			fsys.root.mu.Unlock()
			fsys.root.file("plain", []byte("plain"))
			m := mount(t, fsys)
			srv.Store(m.srv)

			const blocked = maxReaders + 4
			openers := make([]*exec.Cmd, blocked)
			for i := range openers {
				cmd := exec.Command("cat", filepath.Join(m.dir, "slow"))
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				openers[i] = cmd
			}
			released := false
			t.Cleanup(func() {
				if !released {
					close(slow.release)
				}
				for _, cmd := range openers {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
			})
			within(t, m, fmt.Sprintf("%d opens waiting", blocked), func() bool { return slow.waiting.Load() == blocked })

			if got := m.run(t, "cat", filepath.Join(m.dir, "plain")); got != "plain" {
				t.Errorf("cat plain while %d opens wait: %q", blocked, got)
			}
			if _, err := os.Stat(filepath.Join(m.dir, "plain")); err != nil {
				t.Errorf("stat plain while %d opens wait: %v", blocked, err)
			}

			// A signal to an opener makes the kernel send INTERRUPT.
			if err := openers[0].Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			within(t, m, "the INTERRUPT of a blocked open", func() bool { return slow.interrupted.Load() == 1 })

			close(slow.release)
			released = true
			for i, cmd := range openers[1:] {
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("opener %d: %v", i+1, err)
					}
				case <-time.After(time.Minute):
					abort(t, m.dir)
					t.Fatalf("opener %d: not done a minute after the release; the connection was aborted", i+1)
				}
			}
			openers = openers[:1]
		})
	}
}

// loopProbe is a file whose Attr, served by the loop, hands the test the
// loop (Server.loop is set by Serve, out of the test's sight).
type loopProbe struct {
	*memFile
	srv  atomic.Pointer[Server] // set once mounted
	loop atomic.Pointer[readLoop]
}

func (f *loopProbe) Attr(ctx context.Context, a *fuse.Attr) error {
	if s := f.srv.Load(); s != nil {
		f.loop.Store(s.loop)
	}
	return f.memFile.Attr(ctx, a)
}

// TestWatchdogQuietWhileRequestsAreQuick: requests that end within
// handoverAfter never make the watchdog run (its timer is disarmed as each
// ends), so a busy loop pays it no wake-ups.
func TestWatchdogQuietWhileRequestsAreQuick(t *testing.T) {
	fsys := newMemFS()
	f := &loopProbe{memFile: fsys.root.file("f", []byte("f"))}
	fsys.root.mu.Lock()
	fsys.root.entries["f"] = f
	fsys.root.mu.Unlock()
	m := mount(t, fsys)
	f.srv.Store(m.srv)
	name := filepath.Join(m.dir, "f")
	const stats = 2000 // a GETATTR each: the attributes are valid for 0s
	for range stats {
		if _, err := os.Stat(name); err != nil {
			t.Fatal(err)
		}
	}
	l := f.loop.Load()
	l.mu.Lock()
	served, fires := l.seq, l.wdFires
	l.mu.Unlock()
	if served < stats {
		t.Fatalf("%d requests served inline, want at least %d", served, stats)
	}
	// A request may still outlast handoverAfter on a loaded machine (its
	// thread preempted); a watchdog that ran periodically, or at each
	// request, would run for most of them.
	t.Logf("%d requests served inline, the watchdog ran %d times", served, fires)
	if fires*10 > int(served) {
		t.Errorf("the watchdog ran %d times for %d quick requests", fires, served)
	}
}

// TestSilentBlockHandedOverSoon: a request that blocks without saying so
// holds the others up only until its timer expires (handoverAfter), not
// until it ends: a LOOKUP made meanwhile is served at once.
func TestSilentBlockHandedOverSoon(t *testing.T) {
	fsys := newMemFS()
	var srv atomic.Pointer[Server]
	slow := &blockingFile{memFile: fsys.root.file("slow", []byte("slow")), srv: &srv, release: make(chan struct{})}
	probe := &loopProbe{memFile: fsys.root.file("probe", nil)}
	fsys.root.mu.Lock()
	fsys.root.entries["slow"] = slow
	fsys.root.entries["probe"] = probe
	fsys.root.mu.Unlock()
	for i := range 5 {
		fsys.root.file(fmt.Sprintf("plain%d", i), []byte("plain"))
	}
	m := mount(t, fsys)
	srv.Store(m.srv)
	probe.srv.Store(m.srv)
	if _, err := os.Stat(filepath.Join(m.dir, "probe")); err != nil {
		t.Fatal(err)
	}

	opener := exec.Command("cat", filepath.Join(m.dir, "slow"))
	if err := opener.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			close(slow.release)
		}
		_ = opener.Wait()
	})
	within(t, m, "the open waiting", func() bool { return slow.waiting.Load() == 1 })

	// Generous for a loaded machine, and far below "until it ends".
	const bound = time.Second
	for i := range 5 {
		start := time.Now()
		if _, err := os.Stat(filepath.Join(m.dir, fmt.Sprintf("plain%d", i))); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > bound {
			t.Errorf("stat (a LOOKUP) while a request blocks silently took %v, want under %v", took, bound)
		}
	}
	l := probe.loop.Load()
	l.mu.Lock()
	fires := l.wdFires
	l.mu.Unlock()
	if fires == 0 {
		t.Error("the watchdog never ran, yet a request blocked silently")
	}
	close(slow.release)
	released = true
	if err := opener.Wait(); err != nil {
		t.Errorf("cat slow: %v", err)
	}
}

// TestWaitedRequestNotLong: an open that says it waits (Server.Blocking)
// and waits longer than parallelAfter does not count as a long request:
// the requests after it are served one after the other, as before it,
// with no look for more waiting (Conn.Pending) and no hand-over each.
// Before, every such open made the next request hand the reading over
// if another was queued: on a sequential reader's first opens, the
// RELEASE of one file with the LOOKUP of the next behind it.
func TestWaitedRequestNotLong(t *testing.T) {
	fsys := newMemFS()
	var srv atomic.Pointer[Server]
	slow := &seqFile{blockingFile: blockingFile{memFile: fsys.root.file("slow", []byte("slow")), srv: &srv, announce: true, release: make(chan struct{})}}
	probe := &loopProbe{memFile: fsys.root.file("probe", nil)}
	fsys.root.mu.Lock()
	fsys.root.entries["slow"] = slow
	fsys.root.entries["probe"] = probe
	fsys.root.mu.Unlock()
	m := mount(t, fsys)
	srv.Store(m.srv)
	probe.srv.Store(m.srv)
	if _, err := os.Stat(filepath.Join(m.dir, "probe")); err != nil {
		t.Fatal(err)
	}
	l := probe.loop.Load()
	slow.loop.Store(l)
	long := make(map[uint64]bool) // under l.mu
	l.mu.Lock()
	l.ended = func(seq uint64, isLong bool) {
		if isLong {
			long[seq] = true
		}
	}
	l.mu.Unlock()
	t.Cleanup(func() {
		l.mu.Lock()
		l.ended = nil
		l.mu.Unlock()
	})

	const opens = 3
	for i := range opens {
		// Each open waits until it has waited parallelAfter twice over.
		opener := exec.Command("cat", filepath.Join(m.dir, "slow"))
		if err := opener.Start(); err != nil {
			t.Fatal(err)
		}
		within(t, m, fmt.Sprintf("open %d waiting", i), func() bool { return slow.waiting.Load() == 1 })
		waitStart := time.Now()
		within(t, m, fmt.Sprintf("open %d waited %v", i, 2*parallelAfter), func() bool { return time.Since(waitStart) > 2*parallelAfter })
		slow.release <- struct{}{}
		if err := opener.Wait(); err != nil {
			t.Fatalf("cat slow: %v", err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(slow.seqs) != opens {
		t.Fatalf("%d opens served inline, want %d", len(slow.seqs), opens)
	}
	for _, seq := range slow.seqs {
		if long[seq] {
			t.Errorf("the open served as request %d waited %v and ended counted as long", seq, 2*parallelAfter)
		}
	}
}

// seqFile is a blockingFile that records, under the loop's mu, which
// request (readLoop.seq) each open was.
type seqFile struct {
	blockingFile
	loop atomic.Pointer[readLoop]
	seqs []uint64 // under loop.mu
}

func (f *seqFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (Handle, error) {
	if l := f.loop.Load(); l != nil {
		l.mu.Lock()
		if l.serving && l.id == req.Header.ID {
			f.seqs = append(f.seqs, l.seq)
		}
		l.mu.Unlock()
	}
	return f.blockingFile.Open(ctx, req, resp)
}
