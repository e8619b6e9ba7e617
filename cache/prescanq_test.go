package cache

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pathReopener opens queued files again by the path they were written
// at (a test's stand-in for the filesystem's nodes), and records what it
// was asked for.
type pathReopener struct {
	mu     sync.Mutex
	paths  map[inode]string
	opened []string // paths asked for, in order; "!"+path when gone
}

func newPathReopener() *pathReopener { return &pathReopener{paths: map[inode]string{}} }

// file writes a file holding content and tells r its path.
func (r *pathReopener) file(t *testing.T, content string) string {
	t.Helper()
	p := writeFile(t, content)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.paths[inode{st.Dev, st.Ino}] = p
	r.mu.Unlock()
	return p
}

func (r *pathReopener) ReopenWritten(dev, ino uint64) (*os.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.paths[inode{dev, ino}]
	f, err := os.Open(p)
	if err != nil {
		r.opened = append(r.opened, "!"+p)
		return nil, err
	}
	r.opened = append(r.opened, p)
	return f, nil
}

func (r *pathReopener) asked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.opened...)
}

// queueGate is a gate with one scan slot, running at most one scan after
// a write, and queueing at most queueMax more.
func queueGate(s *fakeScanner, queueMax int) *Gate {
	g := NewGate(s, Options{MaxEntries: 64, MaxConcurrent: 1, Timeout: time.Minute})
	g.runMax, g.queueMax = 1, queueMax
	return g
}

// queuedScans is how many scans after a write wait in g's queue.
func queuedScans(g *Gate) int {
	g.pendMu.Lock()
	defer g.pendMu.Unlock()
	return g.queue.len()
}

// Past maxPrescans running, scans after a write wait in the queue without
// a descriptor, and every one is scanned once, in the order they came,
// once a running one is over.
func TestPrescanQueued(t *testing.T) {
	t.Run("in order", func(t *testing.T) {
		s := &fakeScanner{}
		open := gates(t, s, 1)
		r := newPathReopener()
		g := queueGate(s, 16)
		var ps []string
		for i := range 5 {
			p := r.file(t, fmt.Sprintf("download %d", i))
			ps = append(ps, p)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			g.Prescan(f, someone, r)
			f.Close() // the queued ones hold no descriptor of ours
			if i == 0 {
				waitFor(t, "the first scan after write to start", func() bool { return s.Calls() == 1 })
			}
		}
		if n := queuedScans(g); n != 4 {
			t.Fatalf("%d queued; want 4", n)
		}
		for _, p := range ps[1:] {
			if n := descriptorsOf(t, p); n != 0 {
				t.Errorf("%d descriptors of queued %s; want none", n, p)
			}
		}
		open(1)
		waitFor(t, "the scans after write to end", func() bool { return g.prescans.Load() == 0 })
		for i, p := range ps {
			if got, want := string(s.Seen(i+1)), fmt.Sprintf("download %d", i); got != want {
				t.Errorf("scan %d read %q; want %q", i+1, got, want)
			}
			if _, ok := g.Cache().Get(gateKey(t, g, p)); !ok {
				t.Errorf("no verdict cached for %s", p)
			}
		}
		if got := s.Calls(); got != 5 {
			t.Errorf("%d scans; want 5", got)
		}
		if got := r.asked(); fmt.Sprint(got) != fmt.Sprint(ps[1:]) {
			t.Errorf("opened again %v; want %v", got, ps[1:])
		}
		if st := g.Stats(); st.Prescans != 5 || st.PrescansQueued != 4 || st.PrescansDropped != 0 {
			t.Errorf("Prescans, PrescansQueued, PrescansDropped = %d, %d, %d; want 5, 4, 0", st.Prescans, st.PrescansQueued, st.PrescansDropped)
		}
		if n := pendingScans(g); n != 0 {
			t.Errorf("%d background scans pending after all ended; want 0", n)
		}
	})
	t.Run("the real bounds", func(t *testing.T) {
		s := &fakeScanner{}
		release := s.hold(t)
		r := newPathReopener()
		g := NewGate(s, Options{MaxEntries: 2 * maxPrescans, MaxConcurrent: 4, Timeout: time.Minute})
		const extra = 10
		for i := range maxPrescans + extra {
			g.Prescan(openFile(t, r.file(t, fmt.Sprintf("download %d", i))), someone, r)
		}
		if st := g.Stats(); st.Prescans != maxPrescans || st.PrescansQueued != extra {
			t.Errorf("Prescans = %d, PrescansQueued = %d; want %d, %d", st.Prescans, st.PrescansQueued, maxPrescans, extra)
		}
		release()
		waitFor(t, "the scans after write to end", func() bool { return g.prescans.Load() == 0 })
		if got := s.Calls(); got != maxPrescans+extra {
			t.Errorf("%d scans; want %d, one each", got, maxPrescans+extra)
		}
		if st := g.Stats(); st.Prescans != maxPrescans+extra || st.PrescansDropped != 0 {
			t.Errorf("Prescans = %d, PrescansDropped = %d; want %d, 0", st.Prescans, st.PrescansDropped, maxPrescans+extra)
		}
	})
}

// An open that waits for a scan goes before every queued scan after a
// write, and one of a queued file judges it for the queue: the queued
// scan finds the verdict cached and scans nothing.
func TestPrescanQueueOpensFirst(t *testing.T) {
	s := &fakeScanner{}
	open := gates(t, s, 4)
	r := newPathReopener()
	g := queueGate(s, 16)
	a, b, c, d := r.file(t, "a"), r.file(t, "b"), r.file(t, "c"), r.file(t, "d")
	g.Prescan(openFile(t, a), someone, r)
	waitFor(t, "the scan of a to start", func() bool { return s.Calls() == 1 })
	g.Prescan(openFile(t, b), someone, r)
	g.Prescan(openFile(t, c), someone, r)
	// Opens of c (queued) and of d (never written) wait for the slot.
	oc := checkAsync(t.Context(), g, openFile(t, c), someone)
	waitFor(t, "the open of c to wait", func() bool { return g.Stats().Misses == 1 })
	od := checkAsync(t.Context(), g, openFile(t, d), someone)
	waitFor(t, "the open of d to wait", func() bool { return g.Stats().Misses == 2 })
	for call := 1; call <= 4; call++ {
		open(call)
	}
	checkDecision(t, "open of c", recv(t, oc), expect{allow: true, reason: ReasonClean})
	checkDecision(t, "open of d", recv(t, od), expect{allow: true, reason: ReasonClean})
	waitFor(t, "the scans after write to end", func() bool { return g.prescans.Load() == 0 })
	var order []string
	for i := 1; i <= s.Calls(); i++ {
		order = append(order, string(s.Seen(i)))
	}
	if fmt.Sprint(order) != "[a c d b]" {
		t.Errorf("scanned %v; want [a c d b]: the opens first, c once", order)
	}
	if _, ok := g.Cache().Get(gateKey(t, g, c)); !ok {
		t.Error("no verdict cached for c")
	}
}

// Past maxQueued waiting, the oldest record is dropped, counted and
// logged; the next open of that file scans it.
func TestPrescanQueueDropped(t *testing.T) {
	var log lockedBuffer
	s := &fakeScanner{}
	open := gates(t, s, 1)
	r := newPathReopener()
	g := debugGate(s, &log)
	g.runMax, g.queueMax = 1, 2
	a, b, c, d := r.file(t, "a"), r.file(t, "b"), r.file(t, "c"), r.file(t, "d")
	g.Prescan(openFile(t, a), someone, r)
	waitFor(t, "the scan of a to start", func() bool { return s.Calls() == 1 })
	for _, p := range []string{b, c, d} {
		g.Prescan(openFile(t, p), someone, r)
	}
	if st := g.Stats(); st.PrescansQueued != 3 || st.PrescansDropped != 1 {
		t.Errorf("PrescansQueued = %d, PrescansDropped = %d; want 3, 1", st.PrescansQueued, st.PrescansDropped)
	}
	if n := queuedScans(g); n != 2 {
		t.Errorf("%d queued; want 2", n)
	}
	open(1)
	waitFor(t, "the scans after write to end", func() bool { return g.prescans.Load() == 0 })
	if got := r.asked(); fmt.Sprint(got) != fmt.Sprint([]string{c, d}) {
		t.Errorf("opened again %v; want c, d (b dropped)", got)
	}
	if _, ok := g.Cache().Get(gateKey(t, g, b)); ok {
		t.Error("a verdict is cached for b, dropped")
	}
	dropped := 0
	for _, l := range log.lines(t) {
		if l["msg"] == "scan after write dropped: queue full; the next open scans" {
			dropped++
		}
	}
	if dropped != 1 {
		t.Errorf("%d lines say a scan after write was dropped; want 1", dropped)
	}
	calls := s.Calls()
	checkDecision(t, "open of b", g.Check(t.Context(), openFile(t, b), someone), expect{allow: true, reason: ReasonClean})
	if s.Calls() != calls+1 {
		t.Errorf("the open of b, dropped, made %d scans; want 1", s.Calls()-calls)
	}
}

// A queued scan after a write whose file is written again (Modified),
// queued again, or unlinked before its turn scans nothing stale and
// nothing twice.
func TestPrescanQueueCancelled(t *testing.T) {
	tests := []struct {
		name string
		// then acts on the queued file p, written by r.
		then      func(t *testing.T, g *Gate, r *pathReopener, p string)
		wantSeen  []string // what the scans read, the running one's ("a") first
		wantAsked int      // opens of p again
		cached    bool     // a verdict for p's state in the end
	}{
		{name: "written again",
			then: func(t *testing.T, g *Gate, _ *pathReopener, p string) {
				appendTo(t, p, " more")
				modify(t, g, p)
			},
			wantSeen: []string{"a"}},
		{name: "written again and released",
			then: func(t *testing.T, g *Gate, r *pathReopener, p string) {
				appendTo(t, p, " more")
				modify(t, g, p)
				g.Prescan(openFile(t, p), someone, r)
			},
			wantSeen: []string{"a", "b more"}, wantAsked: 1, cached: true},
		{name: "queued twice",
			then: func(t *testing.T, g *Gate, r *pathReopener, p string) {
				g.Prescan(openFile(t, p), someone, r)
			},
			wantSeen: []string{"a", "b"}, wantAsked: 1, cached: true},
		{name: "unlinked",
			then: func(t *testing.T, _ *Gate, _ *pathReopener, p string) {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			},
			wantSeen: []string{"a"}, wantAsked: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &fakeScanner{}
			open := gates(t, s, 1)
			r := newPathReopener()
			g := queueGate(s, 16)
			a, b := r.file(t, "a"), r.file(t, "b")
			g.Prescan(openFile(t, a), someone, r)
			waitFor(t, "the scan of a to start", func() bool { return s.Calls() == 1 })
			f, err := os.Open(b)
			if err != nil {
				t.Fatal(err)
			}
			g.Prescan(f, someone, r)
			f.Close()
			var before unix.Stat_t
			if err := unix.Stat(b, &before); err != nil {
				t.Fatal(err)
			}
			tt.then(t, g, r, b)
			open(1)
			waitFor(t, "the scans after write to end", func() bool { return g.prescans.Load() == 0 })
			var seen []string
			for i := 1; i <= s.Calls(); i++ {
				seen = append(seen, string(s.Seen(i)))
			}
			if fmt.Sprint(seen) != fmt.Sprint(tt.wantSeen) {
				t.Errorf("scanned %q; want %q", seen, tt.wantSeen)
			}
			if got := len(r.asked()); got != tt.wantAsked {
				t.Errorf("b opened again %d times; want %d", got, tt.wantAsked)
			}
			if _, err := os.Stat(b); err == nil {
				if _, ok := g.Cache().Get(gateKey(t, g, b)); ok != tt.cached {
					t.Errorf("verdict cached for b: %v; want %v", ok, tt.cached)
				}
			}
			if n := queuedScans(g) + pendingScans(g); n != 0 {
				t.Errorf("%d scans after write left; want 0", n)
			}
		})
	}
}
