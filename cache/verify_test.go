package cache

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sharedMapping maps the file p (of one page) shared and writable, and
// writes head at its start: the first write to the page faults and
// stamps the file's times; later writes to the still dirty page do not.
func sharedMapping(t *testing.T, p string, head string) []byte {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	copy(m, head)
	return m
}

// pageFile is a file of one page of spaces.
func pageFile(t *testing.T) string {
	return writeFile(t, string(bytes.Repeat([]byte(" "), os.Getpagesize())))
}

// A write through a shared mapping of the backing file into a page that
// is already dirty changes the bytes and not the key (issue #11, "shared
// mappings change bytes without changing the key"). With the contents of
// files up to VerifyMaxSize verified, the cached clean verdict is not
// used and the file is scanned; beyond that size, or with verification
// off, the verdict trusts the key.
func TestGateVerifiesContents(t *testing.T) {
	page := int64(os.Getpagesize())
	tests := []struct {
		name        string
		verify      int64
		want        expect
		wantChanged uint64
	}{
		{"verified", 1 << 20, expect{reason: ReasonInfected, sig: eicarSig}, 1},
		{"exactly the size", page, expect{reason: ReasonInfected, sig: eicarSig}, 1},
		{"over the size", page - 1, expect{allow: true, reason: ReasonClean, cached: true}, 0},
		{"off", 0, expect{allow: true, reason: ReasonClean, cached: true}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeScanner{judge: infectedIf("EICAR")}
			g := NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: tt.verify})
			p := pageFile(t)
			m := sharedMapping(t, p, "clean")
			first := g.Check(t.Context(), openFile(t, p), someone)
			checkDecision(t, "first open", first, expect{allow: true, reason: ReasonClean})
			second := g.Check(t.Context(), openFile(t, p), someone)
			checkDecision(t, "second open", second, expect{allow: true, reason: ReasonClean, cached: true})
			if verified := tt.verify >= page; (first.Sum != 0) != verified || second.Sum != first.Sum {
				t.Errorf("Sum of the first and second decisions %#x, %#x; want equal, and 0 only when not verified", first.Sum, second.Sum)
			}
			before := gateKey(t, g, p)
			copy(m, "EICAR")
			if after := gateKey(t, g, p); after != before {
				t.Fatalf("a write to the dirty page changed the key (%+v, was %+v): nothing to test", after, before)
			}
			checkDecision(t, "open after the write", g.Check(t.Context(), openFile(t, p), someone), tt.want)
			if got := g.Stats().Changed; got != tt.wantChanged {
				t.Errorf("Changed = %d; want %d", got, tt.wantChanged)
			}
		})
	}
}

// Contents that change under the scan without changing the key are
// scanned again, and the verdict cached is the one of the contents that
// stayed.
func TestGateVerifiesDuringScan(t *testing.T) {
	var m []byte
	s := &fakeScanner{judge: infectedIf("EICAR"), mutate: func(call int) {
		if call == 1 {
			copy(m, "EICAR")
		}
	}}
	g := NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: 1 << 20})
	p := pageFile(t)
	m = sharedMapping(t, p, "clean")
	before := gateKey(t, g, p)
	checkDecision(t, "open", g.Check(t.Context(), openFile(t, p), someone),
		expect{reason: ReasonInfected, sig: eicarSig})
	if after := gateKey(t, g, p); after != before {
		t.Fatalf("a write to the dirty page changed the key (%+v, was %+v): nothing to test", after, before)
	}
	if n := s.Calls(); n != 2 {
		t.Errorf("%d scans; want 2", n)
	}
	checkDecision(t, "open again", g.Check(t.Context(), openFile(t, p), someone),
		expect{reason: ReasonInfected, sig: eicarSig, cached: true})
}

// CheckUncached never decides from the cache, and caches what it finds.
func TestGateCheckUncached(t *testing.T) {
	s := &fakeScanner{}
	g := NewGate(s, Options{MaxEntries: 16, Timeout: time.Minute})
	p := writeFile(t, "written by another")
	checkDecision(t, "open", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean})
	checkDecision(t, "open while written", g.CheckUncached(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean})
	checkDecision(t, "open after", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean, cached: true})
	if n, st := s.Calls(), g.Stats(); n != 2 || st.Uncached != 1 || st.Hits != 1 {
		t.Errorf("%d scans, Stats %+v; want 2 scans, Uncached 1, Hits 1", n, st)
	}
}

// BenchmarkContentSum is the digest of a cached file on a cache hit, its
// contents in the page cache.
func BenchmarkContentSum(b *testing.B) {
	for _, size := range []int{16 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "f")
			if err := os.WriteFile(p, bytes.Repeat([]byte("x"), size), 0o644); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := contentSum(f, int64(size)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The digest of a file's contents is the Digest of the same bytes written
// in any pieces: the filesystem checks what it serves with it.
func TestDigestAgrees(t *testing.T) {
	for _, size := range []int{1, 4096, 16 << 10, 64 << 10, 64<<10 + 1, 200 << 10} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + i>>9)
		}
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sum, err := contentSum(openFile(t, p), int64(size))
		if err != nil {
			t.Fatal(err)
		}
		for _, piece := range []int{1, 1000, 4096, 1 << 20} {
			d := NewDigest()
			for off := 0; off < size; off += piece {
				d.Write(data[off:min(off+piece, size)])
			}
			if d.Sum() != sum {
				t.Errorf("%d bytes in pieces of %d: Digest %#x; contentSum %#x", size, piece, d.Sum(), sum)
			}
		}
		if _, err := contentSum(openFile(t, p), int64(size)+1); err != errShort {
			t.Errorf("%d bytes read as %d: %v; want errShort", size, size+1, err)
		}
	}
}

// Verifying a cached verdict reads the opener's descriptor, and leaves
// the file's access time alone (O_NOATIME for the read), as scans do: an
// open that reads nothing keeps atime as a plain open does. Here atime is
// older than mtime, so a plain read would move it (relatime).
func TestGateVerifyKeepsAtime(t *testing.T) {
	g, p, before := judgedAtimeOld(t)
	f := openFile(t, p)
	cachedOpenKeeps(t, g, f, someone, before)
	// A read of the opener's own does move it: the test can tell.
	if _, err := f.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
	if after := statT(t, p); after.Atim == before.Atim {
		t.Log("atime not moved by a plain read either (noatime mount?): the check above proved nothing")
	}
}

// judgedAtimeOld makes a gate that verifies, and a file of its own whose
// atime is an hour older than its mtime (so a plain read would move it,
// relatime), judged clean once: the gate, the file, and its stat then.
func judgedAtimeOld(t *testing.T) (*Gate, string, unix.Stat_t) {
	t.Helper()
	g := NewGate(&fakeScanner{}, Options{MaxEntries: 16, VerifyMaxSize: 1 << 20})
	p := writeFile(t, "verified contents")
	st := statT(t, p)
	old := time.Unix(0, st.Mtim.Nano()).Add(-time.Hour)
	if err := os.Chtimes(p, old, time.Unix(0, st.Mtim.Nano())); err != nil {
		t.Fatal(err)
	}
	before := statT(t, p)
	checkDecision(t, "first open", g.Check(t.Context(), openFile(t, p), someone),
		expect{allow: true, reason: ReasonClean})
	return g, p, before
}

// cachedOpenKeeps checks that g allows f, opened by who, from the cache,
// leaving the file's atime as it was in before and f's flags as they were.
func cachedOpenKeeps(t *testing.T, g *Gate, f *os.File, who Opener, before unix.Stat_t) {
	t.Helper()
	flags, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	checkDecision(t, "cached open", g.Check(t.Context(), f, who),
		expect{allow: true, reason: ReasonClean, cached: true})
	if after := statT(t, f.Name()); after.Atim != before.Atim {
		t.Errorf("atime moved from %v to %v", time.Unix(0, before.Atim.Nano()), time.Unix(0, after.Atim.Nano()))
	}
	if got, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); got != flags {
		t.Errorf("the opener's descriptor has flags %#x after the open; want %#x as before", got, flags)
	}
}

// A verdict of a file whose contents are verified survives what moves
// its times and keeps its contents: a rename (a download written under a
// temporary name, then renamed), a chmod, times set after the copy
// (rsync, cp -p); the digest decides, so a same-size rewrite is scanned.
// A verdict of a file not verified is keyed by its times, as before.
func TestVerifiedVerdictOutlivesTimes(t *testing.T) {
	rename := func(t *testing.T, p string) string {
		// Back and forth between two names, for as long as it takes.
		q, ok := strings.CutSuffix(p, ".part")
		if !ok {
			q = p + ".part"
		}
		if err := os.Rename(p, q); err != nil {
			t.Fatal(err)
		}
		return q
	}
	chmod := func(t *testing.T, p string) string {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, os.FileMode(st.Mode&0o777^0o040)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	setTimes := setOldTimes
	rewrite := func(t *testing.T, p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[0] ^= 1 // same size, other contents
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		content string
		verify  int64
		op      func(*testing.T, string) string
		want    expect
		scans   int // by the open after op
	}{
		{"renamed", "a clean download", 1 << 20, rename, expect{allow: true, reason: ReasonClean, cached: true}, 0},
		{"chmod", "a clean download", 1 << 20, chmod, expect{allow: true, reason: ReasonClean, cached: true}, 0},
		{"times set", "a clean download", 1 << 20, setTimes, expect{allow: true, reason: ReasonClean, cached: true}, 0},
		{"renamed, infected", "an EICAR download", 1 << 20, rename, expect{reason: ReasonInfected, cached: true, sig: eicarSig}, 0},
		{"rewritten, same size", "a clean download", 1 << 20, rewrite, expect{allow: true, reason: ReasonClean}, 1},
		{"renamed, not verified", "a clean download", 0, rename, expect{allow: true, reason: ReasonClean}, 1},
		{"times set, not verified", "a clean download", 0, setTimes, expect{allow: true, reason: ReasonClean}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fakeScanner{judge: infectedIf("EICAR")}
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute, VerifyMaxSize: tc.verify})
			p := writeFile(t, tc.content)
			first := keyOfPath(t, p, "")
			// Old enough not to be racy (racy.go), for the files whose
			// contents are not verified.
			old := time.Now().Add(-time.Hour)
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
			g.Check(t.Context(), openFile(t, p), someone)
			calls := s.Calls()
			// The kernel stamps ctime from a clock that moves by ticks:
			// act until the state differs from the one judged.
			judged := keyOfPath(t, p, "")
			for deadline := time.Now().Add(10 * time.Second); ; {
				p = tc.op(t, p)
				if k := keyOfPath(t, p, ""); k.CtimeNs != judged.CtimeNs || k.MtimeNs != judged.MtimeNs {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s left the times of %s as they were (first %+v)", tc.name, p, first)
				}
				runtime.Gosched()
			}
			checkDecision(t, "open after "+tc.name, g.Check(t.Context(), openFile(t, p), someone), tc.want)
			if got := s.Calls() - calls; got != tc.scans {
				t.Errorf("%d scans for the open after %s, want %d", got, tc.name, tc.scans)
			}
		})
	}
}

// setOldTimes sets the atime and mtime of p to a moment of 2020, as rsync
// or cp -p set a copy's, and returns p.
func setOldTimes(t *testing.T, p string) string {
	t.Helper()
	then := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := os.Chtimes(p, then, then); err != nil {
		t.Fatal(err)
	}
	return p
}
