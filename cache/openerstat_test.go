package cache

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// withStat is someone, with an fstat of f made now (Opener.Stat), as the
// filesystem passes the fstat it made right after opening f.
func withStat(t *testing.T, f *os.File) Opener {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	who := someone
	who.Stat = &st
	return who
}

// TestGateOpenerStat: a Check given the opener's fstat (Opener.Stat)
// decides a cached state from it without an fstat of its own, and still
// verifies the contents; a state not cached, or contents changed under
// the same key, are scanned as ever, and the contents are read and
// counted as changed once, not once per fstat; CheckUncached ignores it.
func TestGateOpenerStat(t *testing.T) {
	tests := []struct {
		name string
		// change is done to the file p (mapped shared, m) after the
		// first open's scan, before the second open and its fstat.
		change      func(t *testing.T, p string, m []byte)
		uncached    bool
		want        expect
		wantScans   int
		wantChanged uint64
	}{
		{"same state", func(*testing.T, string, []byte) {}, false,
			expect{allow: true, reason: ReasonClean, cached: true}, 1, 0},
		{"new state", func(t *testing.T, p string, _ []byte) { appendTo(t, p, "EICAR") }, false,
			expect{reason: ReasonInfected, sig: eicarSig}, 2, 0},
		{"contents changed, same key", func(_ *testing.T, _ string, m []byte) { copy(m, "EICAR") }, false,
			expect{reason: ReasonInfected, sig: eicarSig}, 2, 1},
		{"uncached", func(*testing.T, string, []byte) {}, true,
			expect{allow: true, reason: ReasonClean}, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeScanner{judge: infectedIf("EICAR")}
			g := NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: 1 << 20})
			p := pageFile(t)
			m := sharedMapping(t, p, "clean")
			f := openFile(t, p)
			checkDecision(t, "first open", g.Check(t.Context(), f, withStat(t, f)), expect{allow: true, reason: ReasonClean})
			tt.change(t, p, m)
			f = openFile(t, p)
			check := g.Check
			if tt.uncached {
				check = g.CheckUncached
			}
			checkDecision(t, "second open", check(t.Context(), f, withStat(t, f)), tt.want)
			if n := s.Calls(); n != tt.wantScans {
				t.Errorf("%d scans; want %d", n, tt.wantScans)
			}
			if got := g.Stats().Changed; got != tt.wantChanged {
				t.Errorf("Changed = %d; want %d", got, tt.wantChanged)
			}
		})
	}
}

// TestGateOpenerNoAtime: a descriptor the opener set O_NOATIME on
// (Opener.NoAtime) is read for the digest of a cached verdict as it is:
// the access time stays, and so do the descriptor's flags.
func TestGateOpenerNoAtime(t *testing.T) {
	g, p, before := judgedAtimeOld(t)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	who := withStat(t, f)
	who.NoAtime = true
	cachedOpenKeeps(t, g, f, who, before)
}
