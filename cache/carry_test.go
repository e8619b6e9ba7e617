package cache

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/testenv"
)

// TestKeepVerdict: the verdict of a file whose contents are not verified
// (over cache.verify_max_size) is carried over a change of its metadata
// made between KeepVerdict and done (as the filesystem makes a rename,
// chmod or utimes for a caller), so that the next open is decided from
// the cache, not by a second scan (a download renamed after its scan
// after the write was scanned again at its first open, seconds for a GiB).
// Whatever else happens to the file meanwhile loses it: a write, even one
// whose times are put back, a truncation, a new signature database; and
// nothing is carried for a change that left the state as it was.
func TestKeepVerdict(t *testing.T) {
	dir := carryTmpfs(t)
	rename := func(t *testing.T, p string) string {
		q := p + ".renamed"
		if err := os.Rename(p, q); err != nil {
			t.Fatal(err)
		}
		return q
	}
	chmod := func(t *testing.T, p string) string {
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	setTimes := setOldTimes
	for _, tc := range []struct {
		name    string
		content string
		gran    time.Duration // the filesystem's timestamp granularity, as reported
		busy    bool          // every goroutine for a carry taken
		op      func(t *testing.T, g *Gate, p string) string
		want    expect
		scans   int // by the open after op
		carried uint64
	}{
		{"renamed", "a clean download", 0, false, func(t *testing.T, _ *Gate, p string) string { return rename(t, p) },
			expect{allow: true, reason: ReasonClean, cached: true}, 0, 1},
		{"chmod", "a clean download", 0, false, func(t *testing.T, _ *Gate, p string) string { return chmod(t, p) },
			expect{allow: true, reason: ReasonClean, cached: true}, 0, 1},
		{"times set", "a clean download", 0, false, func(t *testing.T, _ *Gate, p string) string { return setTimes(t, p) },
			expect{allow: true, reason: ReasonClean, cached: true}, 0, 1},
		{"renamed, infected", "an EICAR download", 0, false, func(t *testing.T, _ *Gate, p string) string { return rename(t, p) },
			expect{reason: ReasonInfected, cached: true, sig: eicarSig}, 0, 1},
		{"renamed, coarse times", "a clean download", 100 * time.Millisecond, false,
			func(t *testing.T, _ *Gate, p string) string { return rename(t, p) },
			expect{allow: true, reason: ReasonClean, cached: true}, 0, 1},
		{"renamed, coarse times, no goroutine free", "a clean download", 100 * time.Millisecond, true,
			func(t *testing.T, _ *Gate, p string) string { return rename(t, p) },
			expect{allow: true, reason: ReasonClean}, 1, 0},
		{"written, times put back, renamed", "a clean download", 0, false, func(t *testing.T, _ *Gate, p string) string {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			// Same size. The open breaks the lease: it waits until the
			// lease is given up.
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("EICAR"), 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
			mtime := time.Unix(st.Mtim.Unix())
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			return rename(t, p)
		}, expect{reason: ReasonInfected, sig: eicarSig}, 1, 0},
		{"truncated read-only", "a clean download", 0, false, func(t *testing.T, _ *Gate, p string) string {
			// Breaks no lease, but leaves another size.
			f, err := os.OpenFile(p, os.O_RDONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			return rename(t, p)
		}, expect{allow: true, reason: ReasonEmpty}, 0, 0},
		{"new database, renamed", "a clean download", 0, false, func(t *testing.T, g *Gate, p string) string {
			g.Invalidate(0)
			return rename(t, p)
		}, expect{allow: true, reason: ReasonClean}, 1, 0},
		{"nothing changed", "a clean download", 0, false, func(t *testing.T, _ *Gate, p string) string { return p },
			expect{allow: true, reason: ReasonClean, cached: true}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fakeScanner{judge: infectedIf("EICAR")}
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute})
			carried := make(chan struct{}, 1)
			g.hooks.carried = func() { carried <- struct{}{} }
			p := filepath.Join(dir, "f")
			os.Remove(p + ".renamed")
			if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if tc.gran > 0 {
				g.SetTimeGranularity(st.Dev, tc.gran)
			}
			// Until the verdict is cached: it is not while the file's
			// times are too recent (racy.go).
			for deadline := time.Now().Add(10 * time.Second); g.Stats().Hits == 0; {
				if time.Now().After(deadline) {
					t.Fatal("the file's verdict was never cached")
				}
				g.Check(t.Context(), openFile(t, p), someone)
			}
			if tc.busy {
				for range carryMax {
					g.carrying <- struct{}{}
				}
			}
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			done := g.KeepVerdict(&st, func() (*os.File, error) { return os.Open(p) })
			p = tc.op(t, g, p)
			done()
			if tc.carried > 0 && tc.gran > 0 {
				// In a goroutine of its own, once the window passed.
				select {
				case <-carried:
				case <-time.After(10 * time.Second):
					t.Fatal("no verdict carried 10 s after the change")
				}
			}
			calls := s.Calls()
			checkDecision(t, "open after "+tc.name, g.Check(t.Context(), openFile(t, p), someone), tc.want)
			if got := s.Calls() - calls; got != tc.scans {
				t.Errorf("%d scans for the open after %s, want %d", got, tc.name, tc.scans)
			}
			if got := g.Stats().Carried; got != tc.carried {
				t.Errorf("%d verdicts carried, want %d", got, tc.carried)
			}
			if leaseCount() != 0 {
				t.Errorf("%d leases left held", leaseCount())
			}
		})
	}
}

// leaseCount is how many read leases the Gates hold now.
func leaseCount() int {
	leases.mu.Lock()
	defer leases.mu.Unlock()
	return len(leases.held)
}

// carryTmpfs mounts a small tmpfs of the test's own (a filesystem where
// leases are taken whatever the disk under it) and returns its path.
func carryTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestKeepVerdictWriter: a writer who can write the file without leaving
// a trace in its times, through a shared writable mapping whose page is
// dirty already (on tmpfs a mapping updates the times only at its first
// write to a page), writes EICAR while the file is renamed. No lease can
// be taken while the mapping is there, so nothing is carried and the
// open after the rename scans: infected. Carried, the clean verdict of
// the state before would have served it.
func TestKeepVerdictWriter(t *testing.T) {
	dir := carryTmpfs(t)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("a clean download"), 0o644); err != nil {
		t.Fatal(err)
	}
	mem := mapWritable(t, p)
	mem[0] = 'a' // the page dirty from now on: no more time updates
	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute})
	for deadline := time.Now().Add(10 * time.Second); g.Stats().Hits == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the file's verdict was never cached")
		}
		g.Check(t.Context(), openFile(t, p), someone)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	done := g.KeepVerdict(&st, func() (*os.File, error) { return os.Open(p) })
	copy(mem, "EICAR")
	q := p + ".renamed"
	if err := os.Rename(p, q); err != nil {
		t.Fatal(err)
	}
	done()
	checkDecision(t, "open after the rename", g.Check(t.Context(), openFile(t, q), someone),
		expect{reason: ReasonInfected, sig: eicarSig})
	if got := g.Stats().Carried; got != 0 {
		t.Errorf("%d verdicts carried, want 0", got)
	}
}

// TestScanKeepsVerdictOverRename: a file not verified renamed (or its
// times set) while it is scanned, as a download renamed while its scan
// after the write runs, is not scanned a second time: the scan held a
// read lease from before its first fstat until after its last, so only
// the times moved, and its verdict is the state's after the rename,
// cached. A write meanwhile (even with its times put back) breaks the
// lease, and a file someone may write (mapped shared and writable)
// gets none: scanned again, as any file that changed under its scan.
func TestScanKeepsVerdictOverRename(t *testing.T) {
	dir := carryTmpfs(t)
	for _, tc := range []struct {
		name    string
		mapped  bool // mapped shared and writable throughout
		write   bool // EICAR written during the scan, times put back
		want    expect
		scans   int // by the open during which the file is renamed
		carried bool
	}{
		{"renamed", false, false, expect{allow: true, reason: ReasonClean}, 1, true},
		{"written, times put back, renamed", false, true, expect{reason: ReasonInfected, sig: eicarSig}, 2, false},
		{"mapped writable, renamed", true, false, expect{allow: true, reason: ReasonClean}, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, st := download(t, dir, tc.mapped)
			q := p + ".renamed"
			s := &fakeScanner{judge: infectedIf("EICAR")}
			s.mutate = func(call int) {
				if call != 1 {
					return
				}
				if tc.write {
					f, err := os.OpenFile(p, os.O_WRONLY, 0)
					if err != nil {
						t.Error(err)
						return
					}
					f.WriteAt([]byte("EICAR"), 0)
					f.Close()
					mtime := time.Unix(st.Mtim.Unix())
					os.Chtimes(p, mtime, mtime)
				}
				if err := os.Rename(p, q); err != nil {
					t.Error(err)
				}
			}
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute})
			checkDecision(t, "the open during which it is renamed", g.Check(t.Context(), openFile(t, p), someone), tc.want)
			if got := s.Calls(); got != tc.scans {
				t.Errorf("%d scans, want %d", got, tc.scans)
			}
			calls := s.Calls()
			want := tc.want
			want.cached = true
			checkDecision(t, "the open after", g.Check(t.Context(), openFile(t, q), someone), want)
			if got := s.Calls() - calls; got != 0 {
				t.Errorf("%d scans by the open after, want 0", got)
			}
			if leaseCount() != 0 {
				t.Errorf("%d leases left held", leaseCount())
			}
		})
	}
}

// TestScanUnderLeaseRacyFromItsEnd: a file not verified whose times are
// too recent when its scan starts (a download renamed right after its
// writer's close, then scanned after the write) has its verdict cached
// when the scan outlasts the window and held a read lease throughout:
// nobody could write the file until the fstat after the scan, so only a
// change after that fstat must show in the times. Without a lease (the
// file mapped shared and writable) the verdict stays uncached (racy.go),
// and the next open scans.
func TestScanUnderLeaseRacyFromItsEnd(t *testing.T) {
	dir := carryTmpfs(t)
	for _, tc := range []struct {
		name   string
		mapped bool
		racy   uint64
		scans  int // by the open after
	}{
		{"under a lease", false, 0, 0},
		{"mapped writable", true, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, st := download(t, dir, tc.mapped)
			s := &fakeScanner{}
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute})
			g.SetTimeGranularity(st.Dev, 20*time.Millisecond)
			settled := g.settledAt(&st)
			s.mutate = func(int) {
				// A scan longer than the window: until the clock passed it.
				for time.Now().UnixNano() <= settled {
					time.Sleep(time.Millisecond)
				}
			}
			checkDecision(t, "the first open", g.Check(t.Context(), openFile(t, p), someone), expect{allow: true, reason: ReasonClean})
			if got := g.Stats().Racy; got != tc.racy {
				t.Errorf("%d verdicts not cached as racy, want %d", got, tc.racy)
			}
			calls := s.Calls()
			checkDecision(t, "the open after", g.Check(t.Context(), openFile(t, p), someone),
				expect{allow: true, reason: ReasonClean, cached: tc.scans == 0})
			if got := s.Calls() - calls; got != tc.scans {
				t.Errorf("%d scans by the open after, want %d", got, tc.scans)
			}
		})
	}
}

// mapWritable maps the first bytes of p shared and writable, with the
// descriptor closed at once (the mapping keeps the file open for
// writing), until the test ends.
func mapWritable(t *testing.T, p string) []byte {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, 16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// download writes a clean file f in dir (removing f.renamed), mapped
// shared and writable until the test ends when mapped, and returns its
// path and state.
func download(t *testing.T, dir string, mapped bool) (string, unix.Stat_t) {
	t.Helper()
	p := filepath.Join(dir, "f")
	os.Remove(p + ".renamed")
	if err := os.WriteFile(p, []byte("a clean download"), 0o644); err != nil {
		t.Fatal(err)
	}
	if mapped {
		mapWritable(t, p)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return p, st
}
