package cache

import (
	"log/slog"
	"testing"
	"time"
)

// pendingScans is how many background scans Modified could cancel.
func pendingScans(g *Gate) int {
	g.pendMu.Lock()
	defer g.pendMu.Unlock()
	return len(g.pending)
}

// modify tells g that the file at p is written to through the mount.
func modify(t *testing.T, g *Gate, p string) {
	t.Helper()
	k := keyOfPath(t, p, "")
	g.Modified(k.Dev, k.Ino)
}

// debugGate is a gate on s that logs everything, as JSON, to log.
func debugGate(s *fakeScanner, log *lockedBuffer) *Gate {
	return NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute,
		Logger: slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
}

// cancelledLogged counts the log lines saying a scan after a write of
// path was cancelled.
func cancelledLogged(t *testing.T, log *lockedBuffer, path string) int {
	n := 0
	for _, l := range log.lines(t) {
		if l["msg"] == "scan after write cancelled: written again" && l["path"] == path {
			n++
		}
	}
	return n
}

// A scan after a write that is still running when the file is written
// again through the mount (Modified), or scanned after a write anew
// (Prescan), is cancelled down to the scanner, and caches nothing; a
// Modified of another file leaves it alone.
func TestPrescanSuperseded(t *testing.T) {
	tests := []struct {
		name string
		// then acts on the file at p once its scan after write (of f)
		// started; other is a file of its own.
		then          func(t *testing.T, g *Gate, p, other string)
		wantCancelled int    // scans that saw their context end
		wantScans     int    // in all, once the scans were let go
		wantCached    bool   // a verdict for p's state in the end
		wantLogged    int    // "scan after write cancelled" lines
		content       string // of p
	}{
		{name: "written again", content: "download",
			then:          func(t *testing.T, g *Gate, p, _ string) { modify(t, g, p) },
			wantCancelled: 1, wantScans: 1, wantLogged: 1},
		{name: "written again twice", content: "download",
			then: func(t *testing.T, g *Gate, p, _ string) {
				modify(t, g, p)
				modify(t, g, p)
			},
			wantCancelled: 1, wantScans: 1, wantLogged: 1},
		{name: "scanned after write again", content: "download",
			then: func(t *testing.T, g *Gate, p, _ string) { g.Prescan(openFile(t, p), someone, nil) },
			// The second scan judges the same state, and is let go.
			wantCancelled: 1, wantScans: 2, wantCached: true, wantLogged: 1},
		{name: "another file written", content: "download",
			then:      func(t *testing.T, g *Gate, _, other string) { modify(t, g, other) },
			wantScans: 1, wantCached: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var log lockedBuffer
			s := &fakeScanner{honorCtx: true}
			release := s.hold(t)
			g := debugGate(s, &log)
			p, other := writeFile(t, tt.content), writeFile(t, "other")
			g.Prescan(openFile(t, p), someone, nil)
			waitFor(t, "the scan after write to start", func() bool { return s.Calls() == 1 })
			if n := pendingScans(g); n != 1 {
				t.Fatalf("%d background scans pending; want 1", n)
			}

			tt.then(t, g, p, other)
			waitFor(t, "the cancelled scans to end", func() bool { return s.Cancelled() == tt.wantCancelled })
			waitFor(t, "the scans to start", func() bool { return s.Calls() == tt.wantScans })
			release()
			waitFor(t, "the scans after write to end", func() bool { return g.prescans.Load() == 0 })

			if got := s.Cancelled(); got != tt.wantCancelled {
				t.Errorf("%d scans saw their context end; want %d", got, tt.wantCancelled)
			}
			if got := s.Calls(); got != tt.wantScans {
				t.Errorf("%d scans; want %d", got, tt.wantScans)
			}
			if _, ok := g.Cache().Get(gateKey(t, g, p)); ok != tt.wantCached {
				t.Errorf("verdict cached: %v; want %v", ok, tt.wantCached)
			}
			if n := pendingScans(g); n != 0 {
				t.Errorf("%d background scans pending after all ended; want 0", n)
			}
			if n := waiting(g); n != 0 {
				t.Errorf("Waiting = %d after every scan ended; want 0", n)
			}
			if st := g.Stats(); st.ScanErrors != 0 {
				t.Errorf("ScanErrors = %d; a cancelled scan is no failure", st.ScanErrors)
			}
			if got := cancelledLogged(t, &log, someone.Path); got != tt.wantLogged {
				t.Errorf("%d lines say the scan after write was cancelled; want %d", got, tt.wantLogged)
			}
		})
	}
}

// Modified makes every verdict of the file stale at once, whether a scan
// after a write runs or not, and no other file's: a write through the
// mount may keep size and times (a same-size rewrite within one tick of
// a coarse clock, issue #11), so the next open scans.
func TestModifiedMakesVerdictsStale(t *testing.T) {
	s := &fakeScanner{}
	g := NewGate(s, Options{MaxEntries: 16})
	p, other := writeFile(t, "download"), writeFile(t, "other")
	modify(t, g, p)
	g.Prescan(openFile(t, p), someone, nil)
	waitFor(t, "the scan after write to end", func() bool { return g.prescans.Load() == 0 })
	if _, ok := g.Cache().Get(gateKey(t, g, p)); !ok {
		t.Error("no verdict cached by the scan after write")
	}
	checkDecision(t, "open of another file", g.Check(t.Context(), openFile(t, other), someone),
		expect{allow: true, reason: ReasonClean})
	checkDecision(t, "open after the scan after write", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean, cached: true})

	stale := gateKey(t, g, p)
	modify(t, g, p) // nothing pending: no scan to cancel
	if n := pendingScans(g); n != 0 {
		t.Errorf("%d background scans pending; want 0", n)
	}
	if k := gateKey(t, g, p); k == stale {
		t.Fatalf("key after Modified = %+v, unchanged", k)
	}
	calls := s.Calls()
	checkDecision(t, "open after Modified", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean})
	if s.Calls() != calls+1 {
		t.Errorf("%d scans for the open after Modified; want 1", s.Calls()-calls)
	}
	checkDecision(t, "open of the other file again", g.Check(t.Context(), openFile(t, other), someone),
		expect{allow: true, reason: ReasonClean, cached: true})
}

// A write of another file that shares the file's generation slot in one
// of the two arrays leaves its verdict in use; once others' writes moved
// its slots in both (the price of fixed memory), or its own write moved
// them, the next open scans. (With one array, 2000 files written in a row
// and then opened made 30 scans more, one per pair sharing a slot.)
func TestModifiedSlotSharers(t *testing.T) {
	s := &fakeScanner{}
	g := NewGate(s, Options{MaxEntries: 16})
	p := writeFile(t, "download")
	k := keyOfPath(t, p, "")
	// sharer is an inode of p's device whose slot is p's in array a only.
	sharer := func(a int) uint64 {
		for ino := k.Ino + 1; ; ino++ {
			if g.writes.slot(a, k.Dev, ino) == g.writes.slot(a, k.Dev, k.Ino) &&
				g.writes.slot(1-a, k.Dev, ino) != g.writes.slot(1-a, k.Dev, k.Ino) {
				return ino
			}
		}
	}
	open := func(what string, scans int) {
		t.Helper()
		calls := s.Calls()
		checkDecision(t, what, g.Check(t.Context(), openFile(t, p), someone),
			expect{allow: true, reason: ReasonClean, cached: scans == 0})
		if got := s.Calls() - calls; got != scans {
			t.Errorf("%s: %d scans, want %d", what, got, scans)
		}
	}
	open("first open", 1)
	g.Modified(k.Dev, sharer(0))
	open("open after a write of a file sharing its slot in the first array", 0)
	g.Modified(k.Dev, sharer(0))
	open("open after another such write", 0)
	g.Modified(k.Dev, sharer(1))
	open("open once others' writes moved both its slots", 1)
	g.Modified(k.Dev, sharer(1))
	open("open after a write of a file sharing its slot in the second array", 0)
	g.Modified(k.Dev, k.Ino)
	open("open after its own write", 1)
}

// An open that shares a scan after a write which is then cancelled (the
// file was written again) is not denied for it: it looks at the file
// again and is decided by a scan of what is there now.
func TestOpenSharesSupersededPrescan(t *testing.T) {
	tests := []struct {
		name     string
		appended string // by the second write
		want     expect
	}{
		{"clean", " and more", expect{allow: true, reason: ReasonClean}},
		{"infected", " and EICAR", expect{reason: ReasonInfected, sig: eicarSig}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &fakeScanner{honorCtx: true, judge: infectedIf("EICAR")}
			release := s.hold(t)
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute})
			p := writeFile(t, "download")
			before := keyOfPath(t, p, "")
			g.Prescan(openFile(t, p), someone, nil)
			waitFor(t, "the scan after write to start", func() bool { return s.Calls() == 1 })
			opened := checkAsync(t.Context(), g, openFile(t, p), someone)
			// Counted once the open has joined the scan after write.
			waitFor(t, "the open to join the scan", func() bool { return g.Stats().Misses == 1 && waiting(g) == 2 })

			appendTo(t, p, tt.appended)
			modify(t, g, p)
			waitFor(t, "the scan after write to be cancelled", func() bool { return s.Cancelled() == 1 })
			waitFor(t, "the open's own scan to start", func() bool { return s.Calls() == 2 })
			release()
			checkDecision(t, "open", recv(t, opened), tt.want)

			if got, want := string(s.Seen(s.Calls())), "download"+tt.appended; got != want {
				t.Errorf("the last scan read %q; want %q", got, want)
			}
			if _, ok := g.Cache().Get(before); ok {
				t.Error("a verdict is cached for the state whose scan was cancelled")
			}
			if _, ok := g.Cache().Get(gateKey(t, g, p)); !ok {
				t.Error("no verdict cached for the state the open judged")
			}
			waitFor(t, "the scan after write to end", func() bool { return g.prescans.Load() == 0 })
			if st := g.Stats(); st.ScanErrors != 0 {
				t.Errorf("ScanErrors = %d; a cancelled scan is no failure", st.ScanErrors)
			}
		})
	}
}

// An open that starts the scan of a state between a scan after a write
// taking its slot and asking for that state's flight: the scan after the
// write joins the open's scan, and must not hold its slot while it waits,
// since that scan needs it (the only one here). Before the flights told a
// caller that it joined, both waited for the scan timeout and the open was
// denied.
func TestPrescanJoinsOpenScan(t *testing.T) {
	s := &fakeScanner{}
	g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 1, Timeout: time.Minute})
	p := writeFile(t, "download")
	started := make(chan (<-chan Decision), 1)
	openWaits := make(chan struct{}, 1)
	g.hooks.slotWait = func() { openWaits <- struct{}{} }
	g.hooks.bgSlotHeld = func() {
		started <- checkAsync(t.Context(), g, openFile(t, p), someone)
		select {
		case <-openWaits: // the open's scan waits for the slot held
		case <-time.After(5 * time.Second):
			t.Error("the open's scan did not wait for the slot the scan after the write holds")
		}
	}
	g.Prescan(openFile(t, p), someone, nil)
	var opened <-chan Decision
	select {
	case opened = <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the scan after the write did not take its slot")
	}
	checkDecision(t, "open", recv(t, opened), expect{allow: true, reason: ReasonClean})
	waitFor(t, "the scan after the write to end", func() bool { return g.prescans.Load() == 0 })
	if n := s.Calls(); n != 1 {
		t.Errorf("%d scans; want 1, shared", n)
	}
	if n := g.slots.taken(1); n != 0 {
		t.Errorf("%d scan slots still taken", n)
	}
}
