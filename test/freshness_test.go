package test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// Issue #11: "an open that can read a file gets only bytes clamd judged",
// tried as an attacker would. User A has write access to a file; user B
// opens it later. The marker is content the test signatures detect. In
// every case B never reads the marker, and clean files still find their
// verdict in the cache (counted with clamfuse's metrics).

// session is `fsop session` running as one user: it keeps descriptors and
// mappings between commands, as an attacker's process would.
type session struct {
	t    *testing.T
	m    *mounttest.Mount // for m.Within; nil before a mount exists
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
}

func startSession(t *testing.T, name string, cred *syscall.Credential) *session {
	t.Helper()
	s := &session{t: t, name: name, cmd: exec.Command(fsopBinary(t), "session")}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	var err error
	if s.in, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.out = bufio.NewReader(stdout)
	s.cmd.Stderr = os.Stderr
	mustDo(t, s.cmd.Start())
	t.Cleanup(func() {
		s.in.Close()
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	})
	return s
}

// do runs one command and returns its outcome line.
func (s *session) do(args ...string) string {
	s.t.Helper()
	var line string
	var err error
	run := func() {
		if _, err = fmt.Fprintln(s.in, strings.Join(args, " ")); err == nil {
			line, err = s.out.ReadString('\n')
		}
	}
	if s.m != nil {
		s.m.Within(s.t, scanBound, s.name+": "+strings.Join(args, " "), run)
	} else {
		run()
	}
	if err != nil {
		s.t.Fatalf("%s: %s: %v", s.name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(line)
}

// must runs one command that must succeed, and returns its result.
func (s *session) must(args ...string) string {
	s.t.Helper()
	out := s.do(args...)
	if out != "ok" && !strings.HasPrefix(out, "ok ") {
		s.t.Fatalf("%s: %s: %s", s.name, strings.Join(args, " "), out)
	}
	return strings.TrimPrefix(strings.TrimPrefix(out, "ok"), " ")
}

// freshMount mounts src on mnt as root for every user, with a private
// clamd, metrics, and extra TOML in the [scan] and [cache] tables.
type freshMount struct {
	*mounttest.Mount
	metrics string
}

func startFreshMount(t *testing.T, pm ptMode, c *clamdtest.Clamd, src, mnt, scan, cache string) *freshMount {
	t.Helper()
	addr := opsFreePort(t)
	m := startMount(t, mounttest.Options{Source: src, Target: mnt, Config: fmt.Sprintf(`
[mount]
allow_other = true
%s
[clamd]
address = %q
timeout = "60s"
[scan]
%s
[cache]
%s
[metrics]
listen = %q
`, pm.toml, c.Address(), scan, cache, addr)})
	m.WaitLogLines(t, logBound, "serving metrics", addr)
	pm.check(t, m)
	return &freshMount{Mount: m, metrics: "http://" + addr + "/metrics"}
}

// counts are the gate's counters that the tests look at.
type counts struct{ scans, hits, changed, racy, written float64 }

func (f *freshMount) counts(t *testing.T) counts {
	t.Helper()
	s := opsScrape(t, f.metrics)
	return counts{
		scans:   s[`clamfuse_scans_total{result="clean"}`] + s[`clamfuse_scans_total{result="infected"}`] + s[`clamfuse_scans_total{result="error"}`],
		hits:    s[`clamfuse_cache_hits_total`],
		changed: s[`clamfuse_cache_changed_total`],
		racy:    s[`clamfuse_cache_racy_total`],
		written: s[`clamfuse_opens_while_written_total`],
	}
}

// readAs reads p as B (a process of its own) and fails the test if B got
// the marker; it returns fsop's outcome line.
func readAs(t *testing.T, m *mounttest.Mount, who testUser, p string) string {
	t.Helper()
	var out string
	m.Within(t, scanBound, "read as "+who.name, func() { out = fsop(who.cred, "cat", p) })
	if strings.Contains(out, string(clamdtest.Marker())) {
		t.Fatalf("%s read the marker through the mount: %.80s...", who.name, out)
	}
	return out
}

// wantOutcome fails the test unless out (an fsop line) is want, or starts
// with "ok " and holds want when want is content.
func wantOutcome(t *testing.T, what, out, want string) {
	t.Helper()
	if out != want && !(strings.HasPrefix(out, "ok ") && strings.Contains(out, want)) {
		t.Fatalf("%s: %.120s; want %s", what, out, want)
	}
}

// hexOf is data as a session command takes it.
func hexOf(data []byte) string { return hex.EncodeToString(data) }

// waitTimesOld waits until the newest of p's mtime and ctime is older
// than d, so that a verdict of its current state is cached (racy.go).
func waitTimesOld(t *testing.T, p string, d time.Duration) {
	t.Helper()
	st := lstatT(t, p)
	newest := time.Unix(0, max(st.Mtim.Nano(), st.Ctim.Nano()))
	deadline := time.Now().Add(d + 10*time.Second)
	for time.Since(newest) <= d {
		if time.Now().After(deadline) {
			t.Fatalf("%s: times %v still not older than %v", p, newest, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStateOld is waitTimesOld for a state as fsop's fstat prints it.
func waitStateOld(t *testing.T, state string, d time.Duration) {
	t.Helper()
	var newest time.Time
	for _, f := range strings.Fields(state) {
		k, v, _ := strings.Cut(f, "=")
		if k != "mtime" && k != "ctime" {
			continue
		}
		sec, nsec, _ := strings.Cut(v, ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		n, err2 := strconv.ParseInt(nsec, 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad state %q", state)
		}
		if tm := time.Unix(s, n); tm.After(newest) {
			newest = tm
		}
	}
	deadline := time.Now().Add(d + 10*time.Second)
	for time.Since(newest) <= d {
		if time.Now().After(deadline) {
			t.Fatalf("times %v still not older than %v", newest, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fineSettle outlasts the racy window of a filesystem with fine times
// (granularity plus two coarse ticks: 8 ms at HZ=250, 20 ms at HZ=100).
const fineSettle = 100 * time.Millisecond

// ownedFile writes data at p, owned by u, mode 0644: u writes it, every
// user reads it.
func ownedFile(t *testing.T, p string, data []byte, u testUser) {
	t.Helper()
	putFile(t, p, data)
	mustDo(t, os.Chown(p, int(u.uid), int(u.ga)))
	mustDo(t, os.Chmod(p, 0o644))
}

// samePage is one page of spaces with text at off.
func samePage(off int, text []byte) []byte {
	b := bytes.Repeat([]byte(" "), os.Getpagesize())
	copy(b[off:], text)
	return b
}

// TestFreshBackingMapping (issue #11, attack 1): A maps the file shared
// directly in the backing directory and writes clean bytes; B opens it
// through the mount (scanned clean, cached; B reads nothing, so that the
// kernel's page cache of the mount is empty); A writes the marker into
// the same, still dirty page: no page fault, so size, mtime and ctime
// stay. B's next open must not be decided by the cached verdict: the
// contents are verified (cache.verify_max_size) and the file is scanned.
// Once with source and mountpoint apart, once in place with the mapping
// made before the mount.
func TestFreshBackingMapping(t *testing.T) { inPtModes(t, testFreshBackingMapping) }

func testFreshBackingMapping(t *testing.T, pm ptMode) {
	mounttest.Require(t)
	fsopBinary(t)
	a, b := newTestUser(t), newTestUser(t)
	c := clamdtest.New(t, clamdtest.Options{})
	for _, inPlace := range []bool{false, true} {
		t.Run(map[bool]string{false: "apart", true: "in place"}[inPlace], func(t *testing.T) {
			base := openDir(t, "clamfuse-fresh")
			src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
			if inPlace {
				mnt = src
			}
			mustDo(t, os.MkdirAll(src, 0o755))
			mustDo(t, os.MkdirAll(mnt, 0o755))
			back := filepath.Join(src, "f")
			ownedFile(t, back, samePage(0, nil), a)

			// A's mapping of the backing file, made before the mount.
			clean := samePage(0, []byte("clean bytes, the first write to the page"))[:200]
			sa := startSession(t, "A", a.cred)
			sa.must("open", "w", back, "rw")
			sa.must("mmap", "w", strconv.Itoa(os.Getpagesize()))
			sa.must("poke", "w", "0", hexOf(clean))

			// The file's times, seen through A's descriptor (with an
			// in-place mount, the path shows the mount).
			state := func() string { return sa.must("fstat", "w") }
			m := startFreshMount(t, pm, c, src, mnt, "", "")
			sa.m = m.Mount
			// A sync(2) by anyone on the machine writes the dirty page
			// back, and A's next write to it then stamps the file's
			// times: the attack's condition is gone, and it is tried
			// again.
			for try := 1; ; try++ {
				if try > 5 {
					t.Fatal("the page was written back between A's writes 5 times in a row: nothing tested")
				}
				sa.must("poke", "w", "0", hexOf(clean)) // the marker of a try before gone
				waitStateOld(t, state(), fineSettle)
				before := m.counts(t)
				for _, what := range []string{"B's first open", "B's second open"} {
					var out string
					m.Within(t, scanBound, what, func() { out = fsop(b.cred, "open", filepath.Join(mnt, "f")) })
					wantOutcome(t, what, out, "ok")
				}
				if got := m.counts(t); got.scans != before.scans+1 || got.hits != before.hits+1 {
					t.Errorf("two clean opens: %v scans, %v cache hits; want 1 and 1", got.scans-before.scans, got.hits-before.hits)
				}

				st := state()
				sa.must("poke", "w", "100", hexOf(clamdtest.Marker()))
				if now := state(); now != st {
					t.Logf("try %d: the write to the page changed the file's state (%s, was %s): the page was written back; again", try, now, st)
					continue
				}
				if got := sa.must("pread", "w"); !strings.Contains(got, string(clamdtest.Marker())) {
					t.Fatal("the marker is not in the backing file")
				}
				wantOutcome(t, "B's open after A's write", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), "EACCES")
				if got := m.counts(t); got.changed != before.changed+1 {
					t.Errorf("%v cached verdicts refused for changed contents; want 1", got.changed-before.changed)
				}
				return
			}
		})
	}

	// A fills the mount's page cache with the marker and puts the clean
	// bytes back: every step A's own, no race with B. The contents B's
	// open verifies are the judged ones, but the page cache an open
	// keeps is not (fs/served.go).
	t.Run("page cache", func(t *testing.T) {
		base := openDir(t, "clamfuse-fresh")
		src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
		mustDo(t, os.Mkdir(src, 0o755))
		mustDo(t, os.Mkdir(mnt, 0o755))
		text := []byte("clean bytes, the first write to the page")
		clean := samePage(0, text)[:len(clamdtest.Marker())]
		back := filepath.Join(src, "f")
		ownedFile(t, back, samePage(0, nil), a)
		m := startFreshMount(t, pm, c, src, mnt, "", "")
		sa := startSession(t, "A", a.cred)
		sa.m = m.Mount
		sa.must("open", "w", back, "rw")
		sa.must("mmap", "w", strconv.Itoa(os.Getpagesize()))
		for try := 1; ; try++ {
			if try > 5 {
				t.Fatal("the page was written back between A's writes 5 times in a row: nothing tested")
			}
			sa.must("poke", "w", "0", hexOf(clean))
			st := sa.must("fstat", "w")
			waitStateOld(t, st, fineSettle)
			sa.must("open", "r", filepath.Join(mnt, "f"), "r") // judged clean
			sa.must("poke", "w", "0", hexOf(clamdtest.Marker()))
			// The open stored the bytes it judged in the page cache
			// (clamfuse's first open of a small file): A drops them, so
			// that A's read asks clamfuse, and gets the marker.
			sa.must("dontneed", "r")
			if got := sa.must("pread", "r"); !strings.Contains(got, string(clamdtest.Marker())) {
				t.Fatalf("A's read through the mount after A's write: %.80s", got)
			}
			sa.must("poke", "w", "0", hexOf(clean))
			if now := sa.must("fstat", "w"); now != st {
				t.Logf("try %d: the writes to the page changed the file's state (%s, was %s): the page was written back; again", try, now, st)
				sa.must("close", "r")
				continue
			}
			wantOutcome(t, "B's open after A put the clean bytes back", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), string(text))
			sa.must("close", "r")
			wantOutcome(t, "B's open after A closed", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), string(text))
			return
		}
	})
}

// TestFreshWritersThroughMount (issue #11, attack 3): A opens the file
// read-write through the mount, maps it shared, writes clean bytes and
// msyncs, reads it (scanned clean, cached), then writes the marker into
// the mapping and keeps it. B's fresh open must not be decided from the
// cache: with scan.while_written = "rescan" the kernel writes A's pages
// back first and the file is scanned as it is now (denied); with "deny"
// B's open is refused while A writes, and so is a writer's open while
// another process reads.
func TestFreshWritersThroughMount(t *testing.T) { inPtModes(t, testFreshWritersThroughMount) }

func testFreshWritersThroughMount(t *testing.T, pm ptMode) {
	mounttest.Require(t)
	fsopBinary(t)
	a, b := newTestUser(t), newTestUser(t)
	c := clamdtest.New(t, clamdtest.Options{})
	page := strconv.Itoa(os.Getpagesize())
	setup := func(t *testing.T, scan string) (m *freshMount, src, mnt string, sa *session) {
		base := openDir(t, "clamfuse-fresh")
		src, mnt = filepath.Join(base, "src"), filepath.Join(base, "mnt")
		mustDo(t, os.Mkdir(src, 0o755))
		mustDo(t, os.Mkdir(mnt, 0o755))
		ownedFile(t, filepath.Join(src, "f"), samePage(0, nil), a)
		m = startFreshMount(t, pm, c, src, mnt, scan, "")
		sa = startSession(t, "A", a.cred)
		sa.m = m.Mount
		sa.must("open", "w", filepath.Join(mnt, "f"), "rw")
		sa.must("mmap", "w", page)
		sa.must("poke", "w", "0", hexOf([]byte("clean bytes, written back")))
		sa.must("msync", "w")
		waitTimesOld(t, filepath.Join(src, "f"), fineSettle)
		sa.must("open", "r", filepath.Join(mnt, "f"), "r")
		if got := sa.must("pread", "r"); !strings.Contains(got, "clean bytes") {
			t.Fatalf("A's read: %.80s", got)
		}
		sa.must("poke", "w", "100", hexOf(clamdtest.Marker()))
		return m, src, mnt, sa
	}

	t.Run("rescan", func(t *testing.T) {
		m, src, mnt, sa := setup(t, "")
		before := m.counts(t)
		wantOutcome(t, "B's open while A's mapping holds the marker", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), "EACCES")
		if !bytes.Contains(slurp(t, filepath.Join(src, "f")), clamdtest.Marker()) {
			t.Error("A's dirty page was not written back before B's open was judged")
		}
		// A puts clean bytes back: B's open is let through, by a scan.
		sa.must("poke", "w", "100", hexOf(bytes.Repeat([]byte("-"), len(clamdtest.Marker()))))
		wantOutcome(t, "B's open while A writes clean bytes", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), "clean bytes")
		got := m.counts(t)
		if got.written != before.written+2 || got.scans != before.scans+2 {
			t.Errorf("B's two opens while A writes: %v decided while written, %v scans; want 2 and 2",
				got.written-before.written, got.scans-before.scans)
		}
		// Once A is done, the file is judged in the background (here the
		// scan of B's last open already judged this very state, and its
		// contents are verified, so its verdict was cached at once: the
		// scan after write finds it; cache/racy.go), and B's opens find
		// the verdict cached.
		sa.must("close", "r")
		sa.must("close", "w")
		waitTimesOld(t, filepath.Join(src, "f"), fineSettle)
		done := m.counts(t)
		wantOutcome(t, "B's open after A closed", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), "clean bytes")
		wantOutcome(t, "B's open after A closed, again", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), "clean bytes")
		if now := m.counts(t); now.scans > done.scans+1 || now.hits < done.hits+1 {
			t.Errorf("two clean opens after A closed: %v scans, %v cache hits; want at most 1 scan and a hit",
				now.scans-done.scans, now.hits-done.hits)
		}
	})

	t.Run("deny", func(t *testing.T) {
		m, src, mnt, sa := setup(t, `while_written = "deny"`)
		wantOutcome(t, "B's open while A writes", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), "ETXTBSY")
		m.WaitLogLines(t, logBound, "level=WARN", "open refused: another process has the file open for writing",
			fmt.Sprintf("uid=%d", b.uid))
		// A's own opens are never refused as busy. In passthrough mode,
		// where clamfuse does not see A's writes, A's own open while A
		// writes is judged by a scan of the file as it is: the marker.
		if pm.on {
			wantOutcome(t, "A's own open while A writes the marker", sa.do("open", "r2", filepath.Join(mnt, "f"), "r"), "EACCES")
		} else {
			sa.must("open", "r2", filepath.Join(mnt, "f"), "r")
			sa.must("close", "r2")
		}
		sa.must("close", "r")
		sa.must("close", "w")
		wantOutcome(t, "B's open after A closed", readAs(t, m.Mount, b, filepath.Join(mnt, "f")), "EACCES")

		// And the other way round: no writer while another process reads.
		ownedFile(t, filepath.Join(src, "g"), samePage(0, []byte("clean")), a)
		waitTimesOld(t, filepath.Join(src, "g"), fineSettle)
		sb := startSession(t, "B", b.cred)
		sb.m = m.Mount
		sb.must("open", "r", filepath.Join(mnt, "g"), "r")
		if got := sa.do("open", "w", filepath.Join(mnt, "g"), "rw"); got != "ETXTBSY" {
			t.Errorf("A's open for writing while B reads: %s; want ETXTBSY", got)
		}
		sa.must("open", "r", filepath.Join(mnt, "g"), "r") // readers share
		sb.must("close", "r")
		sa.must("close", "r")
		sa.must("open", "w", filepath.Join(mnt, "g"), "rw")
		sa.must("close", "w")
	})
}

// TestFreshCoarseClock (issue #11, attack 2): on a backing filesystem
// with one-second timestamps, a same-size rewrite within the second keeps
// size, mtime and ctime. Through the mount (A keeps a second descriptor
// open) every change moves the file's generation; outside the mount the
// racy rule keeps the first verdict from being cached. With contents not
// verified (cache.verify_max_size = 0), only those two rules stand between
// B and the marker. With them verified (the default), the first verdict
// is cached at once, racy or not, and the digest taken at B's next open
// is what catches the rewrite (issue #12). A clean file whose times are
// old enough is still cached. In both passthrough modes: a passthrough
// writer's writes are not seen one by one, only its open and release.
func TestFreshCoarseClock(t *testing.T) { inPtModes(t, testFreshCoarseClock) }

func testFreshCoarseClock(t *testing.T, pm ptMode) {
	mounttest.Require(t)
	fsopBinary(t)
	a, b := newTestUser(t), newTestUser(t)
	coarse := oneSecondFS(t)
	for _, v := range []struct {
		name, cache   string
		racy, changed float64 // counted at B's opens behind the mount, same second
	}{
		{"unverified", "verify_max_size = 0", 1, 0},
		{"verified", "", 0, 1},
	} {
		t.Run(v.name, func(t *testing.T) {
			freshCoarseClock(t, pm, a, b, filepath.Join(coarse, v.name), v.cache, v.racy, v.changed)
		})
	}
}

func freshCoarseClock(t *testing.T, pm ptMode, a, b testUser, dir, cacheConf string, wantRacy, wantChanged float64) {
	src := filepath.Join(dir, "src")
	mustDo(t, os.MkdirAll(src, 0o777))
	mustDo(t, os.Chmod(dir, 0o755))
	mustDo(t, os.Chmod(src, 0o777))
	mnt := filepath.Join(openDir(t, "clamfuse-coarse-mnt"), "mnt")
	mustDo(t, os.Mkdir(mnt, 0o755))
	c := clamdtest.New(t, clamdtest.Options{})
	m := startFreshMount(t, pm, c, src, mnt, "", cacheConf)
	m.WaitLogLines(t, logBound, "backing filesystem timestamps", "granularity=1s")
	const settle = time.Second + fineSettle

	clean := bytes.Repeat([]byte("c"), len(clamdtest.Marker()))
	// rewrite runs attack with a same-size rewrite that lands within the
	// same second as the first write, trying again in a new second when
	// the clock moved on in between (it has to, now and then).
	rewrite := func(t *testing.T, name string, attack func(t *testing.T, name string) (first, second unix.Stat_t)) {
		for try := range 5 {
			// Start early in a second.
			for time.Now().Nanosecond() > 200_000_000 {
				time.Sleep(5 * time.Millisecond)
			}
			first, second := attack(t, fmt.Sprintf("%s-%d", name, try))
			if first.Ctim == second.Ctim && first.Mtim == second.Mtim && first.Size == second.Size {
				return
			}
			t.Logf("try %d: the rewrite landed in another second; again", try)
		}
		t.Fatal("no same-second rewrite in 5 tries")
	}

	t.Run("through the mount", func(t *testing.T) {
		rewrite(t, "f", func(t *testing.T, name string) (unix.Stat_t, unix.Stat_t) {
			sa := startSession(t, "A", a.cred)
			sa.m = m.Mount
			p := filepath.Join(mnt, name)
			sa.must("open", "w", p, "rwc")
			sa.must("pwrite", "w", "0", hexOf(clean))
			first := lstatT(t, filepath.Join(src, name))
			sa.must("open", "r", p, "r") // the second descriptor, kept open
			if got := sa.must("pread", "r"); !strings.Contains(got, string(clean)) {
				t.Fatalf("A's read: %.80s", got)
			}
			sa.must("pwrite", "w", "0", hexOf(clamdtest.Marker()))
			second := lstatT(t, filepath.Join(src, name))
			// B comes once A closed the descriptor it wrote with (while
			// it is open, B's open is never decided from the cache:
			// TestFreshWritersThroughMount), A's other one still open.
			sa.must("close", "w")
			wantOutcome(t, "B's open after A closed the writer", readAs(t, m.Mount, b, p), "EACCES")
			sa.must("close", "r")
			wantOutcome(t, "B's open after A closed both", readAs(t, m.Mount, b, p), "EACCES")
			return first, second
		})
	})

	t.Run("behind the mount", func(t *testing.T) {
		rewrite(t, "g", func(t *testing.T, name string) (unix.Stat_t, unix.Stat_t) {
			sa := startSession(t, "A", a.cred)
			back, p := filepath.Join(src, name), filepath.Join(mnt, name)
			sa.must("open", "w", back, "rwc")
			sa.must("pwrite", "w", "0", hexOf(clean))
			first := lstatT(t, back)
			before := m.counts(t)
			var out string
			m.Within(t, scanBound, "B's first open", func() { out = fsop(b.cred, "open", p) })
			wantOutcome(t, "B's first open (reading nothing)", out, "ok")
			racy := m.counts(t).racy - before.racy
			sa.must("pwrite", "w", "0", hexOf(clamdtest.Marker()))
			second := lstatT(t, back)
			if first.Ctim == second.Ctim && racy != wantRacy {
				t.Errorf("the verdict of a file rewritten within the second was counted racy %v times; want %v", racy, wantRacy)
			}
			wantOutcome(t, "B's open after A's rewrite", readAs(t, m.Mount, b, p), "EACCES")
			if changed := m.counts(t).changed - before.changed; first.Ctim == second.Ctim && changed != wantChanged {
				t.Errorf("B's open after the same-second rewrite found a cached verdict whose contents changed %v times; want %v", changed, wantChanged)
			}
			sa.must("close", "w")
			return first, second
		})
	})

	t.Run("clean still cached", func(t *testing.T) {
		p := filepath.Join(src, "settled")
		ownedFile(t, p, clean, a)
		waitTimesOld(t, p, settle)
		before := m.counts(t)
		for range 2 {
			wantOutcome(t, "B's open", readAs(t, m.Mount, b, filepath.Join(mnt, "settled")), string(clean))
		}
		if got := m.counts(t); got.scans != before.scans+1 || got.hits != before.hits+1 {
			t.Errorf("two opens of a settled clean file: %v scans, %v hits; want 1 and 1", got.scans-before.scans, got.hits-before.hits)
		}
	})
}

// oneSecondFS makes an ext4 filesystem with 128-byte inodes (times in
// whole seconds) in an image file in the test's temporary directory,
// loop-mounts it on a directory every user may traverse, and unmounts it
// at cleanup (after the mounts made later in the test are gone). It
// checks that times there really are whole seconds.
func oneSecondFS(t *testing.T) string {
	t.Helper()
	missing := func(why string) {
		t.Helper()
		testenv.Skip(t, "no one-second-timestamp filesystem: %s", why)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		missing("mkfs.ext4 not installed (Debian package e2fsprogs)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing("no loop devices: " + err.Error())
	}
	img := filepath.Join(t.TempDir(), "ext4-128.img")
	mustDo(t, os.WriteFile(img, nil, 0o600))
	mustDo(t, os.Truncate(img, 32<<20))
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-I", "128", "-O", "^has_journal", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	dir := openDir(t, "clamfuse-coarse")
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		missing(fmt.Sprintf("mount -o loop: %v: %s", err, bytes.TrimSpace(out)))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting the one-second filesystem: %v; detaching it", err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	mustDo(t, os.Chmod(dir, 0o755))
	probe := filepath.Join(dir, "probe")
	for i := range 3 {
		putFile(t, probe, []byte(strconv.Itoa(i)))
		if st := lstatT(t, probe); st.Mtim.Nsec != 0 || st.Ctim.Nsec != 0 {
			t.Fatalf("%s: times %v %v are not whole seconds", dir, st.Mtim, st.Ctim)
		}
	}
	mustDo(t, os.Remove(probe))
	return dir
}
