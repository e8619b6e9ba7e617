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
	g.Prescan(openFile(t, p), someone)
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
