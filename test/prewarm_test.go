package test

// End-to-end tests of [scan] prewarm: the walk at mount time that scans
// every file not yet judged, one at a time and only while no open waits
// for a scan, so that first opens find a cached verdict.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// prewarmBound is how long a prewarm of a test tree may take: it says
// "ended", not "how fast".
const prewarmBound = 120 * time.Second

// prewarmConfig is a configuration with prewarm on, for clamd at addr,
// with extra lines appended.
func prewarmConfig(addr, extra string) string {
	return fmt.Sprintf("[clamd]\naddress = %q\n%s\n[scan]\nprewarm = true\n", addr, extra)
}

// prewarmEnd waits for the line that ends the prewarm and returns its
// counts by name (scanned, infected, cached, skipped, errors).
func prewarmEnd(t *testing.T, m *mounttest.Mount) (map[string]int, string) {
	t.Helper()
	line := m.WaitLogLines(t, prewarmBound, "level=INFO", `msg="prewarm done"`)[0]
	counts := map[string]int{}
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if n, err := strconv.Atoi(v); ok && err == nil {
			counts[k] = n
		}
	}
	return counts, line
}

// setOldAtimes sets the access time of every path far in the past, so
// that any read (relatime) would change it; it lists directories first,
// since listing one sets its access time.
func setOldAtimes(t *testing.T, tops ...string) map[string]int64 {
	t.Helper()
	var paths []string
	for _, top := range tops {
		mustDo(t, filepath.Walk(top, func(p string, _ os.FileInfo, err error) error {
			paths = append(paths, p)
			return err
		}))
	}
	old := unix.NsecToTimespec(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	out := map[string]int64{}
	for _, p := range paths {
		mustDo(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{old, {Nsec: unix.UTIME_OMIT}}, unix.AT_SYMLINK_NOFOLLOW))
		st := lstatT(t, p)
		out[p] = st.Atim.Nano()
	}
	return out
}

// TestPrewarm: a tree of clean files in nested directories, an EICAR
// file, an excluded file, an empty one, symlinks leading out of the
// backing directory and a FIFO. With prewarm on, the walk scans every
// clean file and the EICAR file once, follows no symlink, opens no FIFO
// and changes no access time; then every open is decided from the cache
// (clamd is asked nothing more), the EICAR open is denied, the FIFO opens
// without hanging, and a file changed behind the mount is scanned again.
func TestPrewarm(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	dir := t.TempDir()
	src, mnt, outside := filepath.Join(dir, "src"), filepath.Join(dir, "mnt"), filepath.Join(dir, "outside")
	for _, d := range []string{src, mnt, outside, filepath.Join(outside, "sub")} {
		mounttest.MustMkdir(t, d)
	}
	// Outside the root, what the symlinks lead to: detected if scanned.
	putFile(t, filepath.Join(outside, "secret.txt"), clamdtest.Marker())
	putFile(t, filepath.Join(outside, "sub", "inner.txt"), clamdtest.Marker())

	clean := map[string][]byte{}
	for i := range 4 {
		for j := range 3 {
			d := fmt.Sprintf("d%d/e%d", i, j)
			mustDo(t, os.MkdirAll(filepath.Join(src, d), 0o755))
			for k := range 4 {
				rel := fmt.Sprintf("%s/f%d.bin", d, k)
				clean[rel] = pseudoRandom(1000+100*k+10*j+i, uint64(7000+100*i+10*j+k))
			}
		}
	}
	clean["top.txt"] = []byte("at the top\n")
	for rel, data := range clean {
		putFile(t, filepath.Join(src, rel), data)
	}
	const eicarRel = "d1/e2/eicar.com"
	putFile(t, filepath.Join(src, eicarRel), clamdtest.EICAR())
	putFile(t, filepath.Join(src, "empty"), nil)
	putFile(t, filepath.Join(src, "d0/notes.skip"), clamdtest.Marker()) // excluded: never scanned
	mustDo(t, os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(src, "escape.txt")))
	mustDo(t, os.Symlink("../outside", filepath.Join(src, "escape-dir")))
	mustDo(t, os.Symlink(outside, filepath.Join(src, "d2/abs-dir")))
	mustDo(t, unix.Mkfifo(filepath.Join(src, "d0/fifo"), 0o644))
	const skipped = 6 // empty, notes.skip, three symlinks, the FIFO
	atimes := setOldAtimes(t, src, outside)

	addr := opsFreePort(t)
	m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: prewarmConfig(c.Address(),
		fmt.Sprintf("[metrics]\nlisten = %q\n", addr)) + "exclude = [\"*.skip\"]\n"})
	m.WaitLogLines(t, logBound, "level=INFO", `msg="prewarm started"`)
	counts, line := prewarmEnd(t, m)
	t.Logf("%d files: %s", len(clean)+1, line)
	for k, want := range map[string]int{"scanned": len(clean) + 1, "infected": 1, "cached": 0, "skipped": skipped, "errors": 0} {
		if counts[k] != want {
			t.Errorf("prewarm %s = %d; want %d (%s)", k, counts[k], want, line)
		}
	}
	if lines := m.Log.Lines("infected file found by prewarm"); len(lines) != 1 ||
		!strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "path="+eicarRel+" ") ||
		!strings.Contains(lines[0], "signature="+clamdtest.EICARSignature) {
		t.Errorf("prewarm detections logged: %q; want one WARN line for %s", lines, eicarRel)
	}
	// Nothing outside the root was scanned (it would be a detection),
	// and nothing read changed an access time, inside or out.
	for p, at := range atimes {
		if st := lstatT(t, p); st.Atim.Nano() != at {
			t.Errorf("%s: access time changed by the prewarm", p)
		}
	}

	before := opsScrape(t, "http://"+addr+"/metrics")
	for k, want := range map[string]float64{
		`clamfuse_prewarm_files_total{result="clean"}`:    float64(len(clean)),
		`clamfuse_prewarm_files_total{result="infected"}`: 1,
		`clamfuse_prewarm_files_total{result="cached"}`:   0,
		`clamfuse_prewarm_files_total{result="skipped"}`:  skipped,
		`clamfuse_prewarm_files_total{result="error"}`:    0,
		`clamfuse_scans_total{result="clean"}`:            float64(len(clean)),
		`clamfuse_scans_total{result="infected"}`:         1,
		`clamfuse_scans_total{result="error"}`:            0,
		`clamfuse_cache_misses_total`:                     0,
	} {
		if got, ok := before[k]; !ok || got != want {
			t.Errorf("after the prewarm: %s = %v (present: %v); want %v", k, got, ok, want)
		}
	}

	// Every open now finds its verdict cached.
	for rel, data := range clean {
		wantSame(t, rel, readVia(t, m, m.Path(rel)), data)
	}
	wantEACCES(t, m, m.Path(eicarRel))
	// The actions run on the first denied open (the audit line).
	m.WaitLogLines(t, logBound, "level=WARN", "msg=detection", "path="+eicarRel+" ")
	var ferr error
	m.Within(t, scanBound, "open of the FIFO", func() {
		var fd int
		if fd, ferr = unix.Open(m.Path("d0/fifo"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); ferr == nil {
			unix.Close(fd)
		}
	})
	if ferr != nil {
		t.Errorf("open of the FIFO through the mount: %v", ferr)
	}
	wantSame(t, "excluded file", readVia(t, m, m.Path("d0/notes.skip")), clamdtest.Marker())

	after := opsScrape(t, "http://"+addr+"/metrics")
	scans := func(s map[string]float64) float64 {
		return s[`clamfuse_scans_total{result="clean"}`] + s[`clamfuse_scans_total{result="infected"}`] + s[`clamfuse_scans_total{result="error"}`]
	}
	if scans(after) != scans(before) {
		t.Errorf("scans after the prewarm: %v, then %v after opening every file; want no more", scans(before), scans(after))
	}
	for k, want := range map[string]float64{
		`clamfuse_cache_hits_total`:                               float64(len(clean) + 1),
		`clamfuse_cache_misses_total`:                             0,
		`clamfuse_opens_total{decision="allow",reason="clean"}`:   float64(len(clean)),
		`clamfuse_opens_total{decision="deny",reason="infected"}`: 1,
	} {
		if got := after[k]; got != want {
			t.Errorf("after opening every file: %s = %v; want %v", k, got, want)
		}
	}

	// A file changed behind the mount after the prewarm is scanned again
	// at its next open (here: found infected).
	f, err := os.OpenFile(filepath.Join(src, "top.txt"), os.O_WRONLY|os.O_APPEND, 0)
	mustDo(t, err)
	_, err = f.Write(clamdtest.Marker())
	mustDo(t, errors.Join(err, f.Close()))
	wantEACCES(t, m, m.Path("top.txt"))
	if got := scans(opsScrape(t, "http://"+addr+"/metrics")); got != scans(before)+1 {
		t.Errorf("scans = %v after opening a file changed behind the mount; want %v", got, scans(before)+1)
	}
}

// TestPrewarmOpensFirst: with a single scan slot, an open that comes
// while the prewarm walks the tree waits behind the one prewarm scan
// already running, no more; and the walk, which moves on to its next file
// meanwhile, waits for the opens' scans: a second open that comes while
// the first one's scan runs is scanned before the walk's next file. A
// proxy in front of clamd holds every scan, so the test knows which scan
// runs when each open comes, and sees the order of the scans that follow.
// The gate counts a miss once the open waits on its scan (the metrics
// show it), and logs at debug level when the walk waits for the opens.
// In the end every file is scanned exactly once, by the walk or an open.
func TestPrewarmOpensFirst(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	proxy.Hold()
	dir := t.TempDir()
	src, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "mnt")
	mounttest.MustMkdir(t, src)
	mounttest.MustMkdir(t, mnt)
	const dirs, perDir = 5, 20
	contents := map[string][]byte{} // backing path -> bytes
	for i := range dirs {
		d := fmt.Sprintf("d%02d", i)
		mounttest.MustMkdir(t, filepath.Join(src, d))
		for j := range perDir {
			p := filepath.Join(src, d, fmt.Sprintf("f%02d", j))
			contents[p] = pseudoRandom(4<<10, uint64(9000+perDir*i+j))
			putFile(t, p, contents[p])
		}
	}
	addr := opsFreePort(t)
	m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Args: []string{"--log-level", "debug"},
		Config: prewarmConfig(proxy.Address(), fmt.Sprintf("max_concurrent = 1\n[metrics]\nlisten = %q\n", addr))})
	misses := func() float64 { return opsScrape(t, "http://"+addr+"/metrics")["clamfuse_cache_misses_total"] }
	const yields = "prewarm waits: opens wait for scans"

	scanned := map[string]bool{}
	// unscanned is a file neither the walk nor an open has had scanned.
	unscanned := func() string {
		for i := dirs - 1; i >= 0; i-- {
			for j := perDir - 1; j >= 0; j-- {
				if p := filepath.Join(src, fmt.Sprintf("d%02d/f%02d", i, j)); !scanned[p] {
					return p
				}
			}
		}
		t.Fatal("every file scanned already")
		return ""
	}
	// open reads p through the mount in the background, once the
	// number of opens waiting on scans shows it waits too.
	opens := 0
	open := func(p string) <-chan error {
		rel, _ := filepath.Rel(src, p)
		read := make(chan error, 1)
		go func() {
			b, err := os.ReadFile(m.Path(rel))
			if err == nil && !bytes.Equal(b, contents[p]) {
				err = fmt.Errorf("read %d bytes of %s, not the file's", len(b), rel)
			}
			read <- err
		}()
		opens++
		eventually(t, logBound, "the open of "+rel+" waiting on its scan", func() bool { return misses() == float64(opens) })
		scanned[p] = true
		return read
	}
	next := func(want, what string) *clamdtest.Scan {
		t.Helper()
		s := proxy.Next(t, scanBound)
		if want != "" && s.Path != want {
			t.Fatalf("%s: clamd got a scan of %s; want %s", what, s.Path, want)
		}
		if want == "" && scanned[s.Path] {
			t.Fatalf("%s: the walk scanned %s, which an open had judged", what, s.Path)
		}
		scanned[s.Path] = true
		return s
	}
	done := func(read <-chan error) {
		t.Helper()
		select {
		case err := <-read:
			mustDo(t, err)
		case <-time.After(scanBound):
			m.Abort()
			t.Fatal("an open did not return after its scan")
		}
	}

	walk := next("", "the walk's first scan")
	for round := range 2 {
		// An open comes while a walk scan runs: it is next.
		first := unscanned()
		read1 := open(first)
		waited := len(m.Log.Lines(yields))
		walk.Release()
		scan1 := next(first, fmt.Sprintf("round %d, after the walk scan the first open waited behind", round))
		// The walk moves on, to wait for the open's scan; a second open
		// comes now, and goes before the walk all the same.
		m.WaitLogLinesAfter(t, logBound, waited, yields)
		second := unscanned()
		read2 := open(second)
		scan1.Release()
		done(read1)
		scan2 := next(second, fmt.Sprintf("round %d, after the first open's scan, with a second open and the walk waiting", round))
		scan2.Release()
		done(read2)
		walk = next("", fmt.Sprintf("round %d, the walk going on", round))
	}
	proxy.Release()
	counts, line := prewarmEnd(t, m)
	t.Logf("%d files: %s", dirs*perDir, line)
	if counts["scanned"]+counts["cached"] != dirs*perDir || counts["cached"] != opens || counts["errors"] != 0 || counts["infected"] != 0 {
		t.Errorf("prewarm counts %v; want %d cached (the opens'), the rest scanned: %d in all", counts, opens, dirs*perDir)
	}
	if n := proxy.Scans(); n != dirs*perDir {
		t.Errorf("clamd got %d scans; want %d: each file once, by the prewarm or by an open", n, dirs*perDir)
	}
}

// TestPrewarmStopped: a prewarm that cannot finish (clamd never answers)
// ends at once when clamfuse is told to stop, with its last line, and
// does not hold up the unmount or the exit.
func TestPrewarmStopped(t *testing.T) {
	t.Parallel() // mostly waits: for timeouts, for a busy mount
	mounttest.Require(t)
	for _, tc := range []struct {
		name string
		stop func(t *testing.T, m *mounttest.Mount)
	}{
		{"SIGTERM", signalStop(syscall.SIGTERM)},
		{"umount", commandStop("umount")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := silentClamd(t, true)
			src := filepath.Join(t.TempDir(), "src")
			mounttest.MustMkdir(t, src)
			for i := range 20 { // 2 s each: the walk lasts far longer than the test
				putFile(t, filepath.Join(src, fmt.Sprintf("f%02d", i)), []byte("never judged"))
			}
			m := mounttest.Start(t, mounttest.Options{Source: src, Config: prewarmConfig(addr, `timeout = "2s"`)})
			m.WaitLogLines(t, logBound, `msg="prewarm started"`)
			tc.stop(t, m)
			code, err := m.ExitCode(30 * time.Second)
			if err != nil || code != 0 {
				t.Fatalf("clamfuse exit: %d, %v; want 0", code, err)
			}
			m.WaitLogLines(t, logBound, "level=INFO", `msg="prewarm stopped"`)
			if lines := m.Log.Lines(`msg="prewarm done"`); len(lines) != 0 {
				t.Errorf("prewarm done with clamd silent: %q", lines)
			}
			if mounttest.IsFuseMount(m.Target) {
				t.Errorf("%s still mounted after clamfuse exited", m.Target)
			}
		})
	}
}

// TestPrewarmInPlace: with the mount over its own backing directory, the
// walk reaches the files beneath the mount, and opens find them judged.
func TestPrewarmInPlace(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	dir := filepath.Join(t.TempDir(), "inplace")
	mounttest.MustMkdir(t, dir)
	putFile(t, filepath.Join(dir, "clean.txt"), []byte("clean"))
	putFile(t, filepath.Join(dir, "eicar.com"), clamdtest.EICAR())
	addr := opsFreePort(t)
	m := mounttest.Start(t, mounttest.Options{Source: dir, Target: dir, Config: prewarmConfig(c.Address(),
		fmt.Sprintf("[metrics]\nlisten = %q\n", addr))})
	counts, line := prewarmEnd(t, m)
	if counts["scanned"] != 2 || counts["infected"] != 1 {
		t.Errorf("in place: %s; want 2 scanned, 1 infected", line)
	}
	opsWantRead(t, m, m.Path("clean.txt"), []byte("clean"))
	opsWantErrno(t, m, m.Path("eicar.com"), syscall.EACCES)
	s := opsScrape(t, "http://"+addr+"/metrics")
	if s[`clamfuse_cache_hits_total`] != 2 || s[`clamfuse_cache_misses_total`] != 0 {
		t.Errorf("in place: hits %v, misses %v; want every open from the cache",
			s[`clamfuse_cache_hits_total`], s[`clamfuse_cache_misses_total`])
	}
}

// TestPrewarmWaitsForClamd: at boot clamd may come up after clamfuse (it
// loads its database first). A prewarm that finds no clamd waits for one
// instead of counting the whole tree as errors, and then scans it all.
func TestPrewarmWaitsForClamd(t *testing.T) {
	mounttest.Require(t)
	sockDir, err := os.MkdirTemp("", "latecl") // short: sun_path is 108 bytes
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "clamd.sock") // no clamd there yet

	dir := t.TempDir()
	src, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "mnt")
	mounttest.MustMkdir(t, src)
	mounttest.MustMkdir(t, mnt)
	const files = 5
	for i := range files {
		putFile(t, filepath.Join(src, fmt.Sprintf("f%d", i)), pseudoRandom(2000, uint64(8100+i)))
	}
	m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: prewarmConfig("unix:"+sock, "")})
	m.WaitLogLines(t, logBound, "level=INFO", `msg="prewarm waits for clamd"`)

	// clamd comes up: its socket appears at the configured path.
	c := clamdtest.New(t, clamdtest.Options{})
	mustDo(t, os.Symlink(strings.TrimPrefix(c.Address(), "unix:"), sock))
	counts, line := prewarmEnd(t, m)
	if counts["scanned"] != files || counts["errors"] != 0 {
		t.Errorf("prewarm end: %s; want scanned=%d errors=0", line, files)
	}
}
