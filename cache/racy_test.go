package cache

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The racy rule on its own: a verdict is cached only when the newest of
// mtime and ctime is older than the moment the state was taken by the
// window of its filesystem (granularity plus two coarse ticks).
func TestRacyRule(t *testing.T) {
	const sec = int64(time.Second)
	tick := int64(coarseTick)
	ts := func(ns int64) unix.Timespec { return unix.NsecToTimespec(ns) }
	tests := []struct {
		name         string
		gran         time.Duration
		mtime, ctime int64 // ns
		since        int64 // ns
		want         bool
	}{
		{"fine, long ago", time.Nanosecond, 100 * sec, 100 * sec, 200 * sec, false},
		{"fine, within two ticks", time.Nanosecond, 100 * sec, 100 * sec, 100*sec + tick, true},
		{"fine, just past the window", time.Nanosecond, 100 * sec, 100 * sec, 100*sec + 2*tick + 1, false},
		{"whole seconds, same second", time.Second, 100 * sec, 100 * sec, 100*sec + sec/2, true},
		{"whole seconds, next second", time.Second, 100 * sec, 100 * sec, 101 * sec, true},
		{"whole seconds, past the window", time.Second, 100 * sec, 100 * sec, 101*sec + 2*tick + 1, false},
		{"ctime recent, mtime old", time.Nanosecond, 10 * sec, 100 * sec, 100*sec + tick, true},
		{"mtime recent, ctime old", time.Nanosecond, 100 * sec, 10 * sec, 100*sec + tick, true},
		{"mtime in the future", time.Nanosecond, 300 * sec, 100 * sec, 200 * sec, true},
		{"FAT two seconds", 2 * time.Second, 100 * sec, 100 * sec, 101*sec + sec/2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGate(&fakeScanner{}, Options{MaxEntries: 1})
			g.SetTimeGranularity(7, tt.gran)
			st := unix.Stat_t{Dev: 7, Mtim: ts(tt.mtime), Ctim: ts(tt.ctime)}
			if got := g.racy(&st, tt.since); got != tt.want {
				t.Errorf("racy = %v; want %v (window %v)", got, tt.want, g.TimeWindow(7))
			}
		})
	}
	g := NewGate(&fakeScanner{}, Options{MaxEntries: 1})
	if got := g.TimeWindow(8); got != unknownWindow {
		t.Errorf("window of a device never reported = %v; want %v", got, unknownWindow)
	}
}

// A file whose times are too recent is scanned at every open, and its
// verdict decides each of them without being cached, until its times are
// old enough: then it is cached as usual (issue #11, "clocks coarser than
// the scan").
func TestGateRacyNotCached(t *testing.T) {
	s := &fakeScanner{}
	g := NewGate(s, Options{MaxEntries: 16})
	p := writeFile(t, "just written")
	st := statT(t, p)
	g.SetTimeGranularity(st.Dev, time.Second)
	settled := g.settledAt(&st)
	for i := range 2 {
		checkDecision(t, "open while racy", g.Check(t.Context(), openFile(t, p), someone),
			expect{allow: true, reason: ReasonClean})
		if time.Now().UnixNano() >= settled {
			t.Fatalf("open %d came after the window had passed; the machine is too slow for this test", i)
		}
	}
	if n, r := s.Calls(), g.Stats().Racy; n != 2 || r != 2 {
		t.Errorf("%d scans, %d racy; want 2 and 2", n, r)
	}
	waitFor(t, "the window to pass", func() bool { return time.Now().UnixNano() > settled })
	checkDecision(t, "first open once settled", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean})
	checkDecision(t, "second open once settled", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean, cached: true})
	if n := s.Calls(); n != 3 {
		t.Errorf("%d scans in all; want 3", n)
	}
}

// A scan after a write waits until the file's times are old enough for
// its verdict to be cached; an open meanwhile scans on its own, and
// caches nothing.
func TestPrescanWaitsForSettledTimes(t *testing.T) {
	var mu sync.Mutex
	var started []int64
	s := &fakeScanner{mutate: func(int) {
		mu.Lock()
		started = append(started, time.Now().UnixNano())
		mu.Unlock()
	}}
	g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute})
	p := writeFile(t, "download")
	st := statT(t, p)
	g.SetTimeGranularity(st.Dev, 300*time.Millisecond)
	settled := g.settledAt(&st)
	g.Prescan(openFile(t, p), someone, nil)
	if n := s.Calls(); n != 0 && time.Now().UnixNano() < settled {
		t.Fatalf("the scan after write started %d scans before the window passed", n)
	}
	checkDecision(t, "open during the wait", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean})
	if time.Now().UnixNano() >= settled {
		t.Fatal("the open came after the window had passed; the machine is too slow for this test")
	}
	waitFor(t, "the scan after write to end", func() bool { return g.prescans.Load() == 0 })
	if n := s.Calls(); n != 2 {
		t.Fatalf("%d scans; want 2 (the open's, then the scan after write)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if started[1] < settled {
		t.Errorf("the scan after write ran %v before the window passed", time.Duration(settled-started[1]))
	}
	checkDecision(t, "open after the scan after write", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean, cached: true})
}

func statT(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A file whose contents are verified has its verdict cached even while
// its times are racy: a change that keeps the key afterwards (here a
// write to a dirty page of a shared mapping, which stamps no time, as a
// write in the same clock tick would not) changes the contents, and the
// digest taken at the next open sees it (issue #12, "first open right
// after a write").
func TestGateRacyVerifiedCached(t *testing.T) {
	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: 1 << 20})
	p := pageFile(t)
	m := sharedMapping(t, p, "clean")
	st := statT(t, p)
	g.SetTimeGranularity(st.Dev, time.Hour) // racy for the whole test
	checkDecision(t, "open while racy", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean})
	checkDecision(t, "open again", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean, cached: true})
	before := gateKey(t, g, p)
	copy(m, "EICAR")
	if after := gateKey(t, g, p); after != before {
		t.Fatalf("a write to the dirty page changed the key (%+v, was %+v): nothing to test", after, before)
	}
	checkDecision(t, "open after a change that kept the key", g.Check(t.Context(), openFile(t, p), someone),
		expect{reason: ReasonInfected, sig: eicarSig})
	if n, st := s.Calls(), g.Stats(); n != 2 || st.Racy != 0 || st.Changed != 1 {
		t.Errorf("%d scans, %d racy, %d changed; want 2, 0, 1", n, st.Racy, st.Changed)
	}
	// Beyond verify_max_size the racy rule holds as before.
	g = NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: 16})
	g.SetTimeGranularity(st.Dev, time.Hour)
	p = writeFile(t, "larger than sixteen bytes, not verified")
	for range 2 {
		checkDecision(t, "open of an unverified racy file", g.Check(t.Context(), openFile(t, p), someone),
			expect{allow: true, reason: ReasonClean})
	}
	if r := g.Stats().Racy; r != 2 {
		t.Errorf("%d racy; want 2", r)
	}
}

// The scan after a write of a file whose contents are verified starts at
// once, without waiting for its times to settle, and an open right after
// the writer's close shares it instead of scanning on its own; its
// verdict is cached.
func TestPrescanVerifiedStartsAtOnce(t *testing.T) {
	s := &fakeScanner{}
	release := s.hold(t)
	g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	p := writeFile(t, "download")
	st := statT(t, p)
	g.SetTimeGranularity(st.Dev, time.Hour) // a wait would outlast the test
	g.Prescan(openFile(t, p), someone, nil)
	waitFor(t, "the scan after write to start", func() bool { return s.Inflight() == 1 })
	ch := checkAsync(t.Context(), g, openFile(t, p), someone)
	waitFor(t, "the open to join it", func() bool { return g.Stats().Misses == 1 })
	release()
	checkDecision(t, "open during the scan after write", recv(t, ch), expect{allow: true, reason: ReasonClean})
	waitFor(t, "the scan after write to end", func() bool { return g.prescans.Load() == 0 })
	checkDecision(t, "open after it", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean, cached: true})
	if n := s.Calls(); n != 1 {
		t.Errorf("%d scans; want 1", n)
	}
}
