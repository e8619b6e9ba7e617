package test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// The tests of this file hold clamfuse to what no user may take from the
// others: descriptors and memory. Each mount runs with RLIMIT_NOFILE 4096
// (boundsNoFile), so the limits it derives are small and the same on
// every machine.

const boundsNoFile = 4096

// fdLimits are the descriptor limits clamfuse logged at mount time.
type fdLimits struct {
	nofile, reserve, dirFDs, maxOpen, perUser int
}

var limitField = regexp.MustCompile(`\b(nofile|reserve|dir_fds|max_open|max_open_per_user)=(\d+)`)

func clamfuseLimits(t *testing.T, m *mounttest.Mount) fdLimits {
	t.Helper()
	line := m.WaitLogLines(t, 10*time.Second, "descriptor limits")[0]
	var l fdLimits
	for _, f := range limitField.FindAllStringSubmatch(line, -1) {
		v, _ := strconv.Atoi(f[2])
		switch f[1] {
		case "nofile":
			l.nofile = v
		case "reserve":
			l.reserve = v
		case "dir_fds":
			l.dirFDs = v
		case "max_open":
			l.maxOpen = v
		case "max_open_per_user":
			l.perUser = v
		}
	}
	if l.nofile != boundsNoFile || l.perUser == 0 || l.dirFDs == 0 || l.maxOpen == 0 {
		t.Fatalf("descriptor limits line %q: want nofile=%d and every limit set", line, boundsNoFile)
	}
	t.Logf("clamfuse limits: %+v", l)
	return l
}

// startBoundsMount mounts a fresh source with allow_other, a real clamd
// and RLIMIT_NOFILE boundsNoFile.
func startBoundsMount(t *testing.T) (*mounttest.Mount, fdLimits) {
	t.Helper()
	mounttest.Require(t)
	fsopBinary(t)
	base := openDir(t, "clamfuse-bounds")
	src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
	for _, d := range []string{src, mnt} {
		mustDo(t, os.Mkdir(d, 0o755))
	}
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := startChecked(t, mounttest.Options{Source: src, Target: mnt, NoFile: boundsNoFile,
		Args: []string{"--allow-other", "--clamd", clamd.Address(), "--timeout", "30s"}})
	return m, clamfuseLimits(t, m)
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	mustDo(t, err)
	return len(ents)
}

// holder is an fsop hold or holddir process keeping descriptors open.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	line  string // what it printed once it stopped opening
	once  sync.Once
}

// startHolder runs fsop args as cred and waits for its line.
func startHolder(t *testing.T, cred *syscall.Credential, args ...string) *holder {
	t.Helper()
	cmd := exec.Command(fsopBinary(t), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	stdin, err := cmd.StdinPipe()
	mustDo(t, err)
	stdout, err := cmd.StdoutPipe()
	mustDo(t, err)
	cmd.Stderr = os.Stderr
	mustDo(t, cmd.Start())
	h := &holder{cmd: cmd, stdin: stdin}
	t.Cleanup(h.release)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("fsop %v: %v", args, err)
	}
	h.line = strings.TrimSpace(line)
	return h
}

// release makes the holder close its descriptors and exit.
func (h *holder) release() {
	h.once.Do(func() {
		h.stdin.Close()
		h.cmd.Wait()
	})
}

// held parses "held N [ERRNO]".
func (h *holder) held(t *testing.T) (int, string) {
	t.Helper()
	f := strings.Fields(h.line)
	if len(f) < 2 || f[0] != "held" {
		t.Fatalf("fsop hold printed %q", h.line)
	}
	n, err := strconv.Atoi(f[1])
	mustDo(t, err)
	if len(f) == 3 {
		return n, f[2]
	}
	return n, ""
}

// waitFDsBelow polls until clamfuse holds fewer than n descriptors.
func waitFDsBelow(t *testing.T, pid, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := fdCount(t, pid)
		if c < n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: clamfuse still holds %d descriptors after 20s, want fewer than %d", what, c, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBounds runs the cases of this file on one mount (and one clamd),
// in turn, as users A and B.
func TestBounds(t *testing.T) {
	m, lim := startBoundsMount(t)
	a, b := newTestUser(t), newTestUser(t)
	t.Run("opens_per_user", func(t *testing.T) { boundsOpensPerUser(t, m, lim, a, b) })
	t.Run("find_many_dirs", func(t *testing.T) { boundsFindManyDirs(t, m, lim, a, b) })
	t.Run("listing_memory", func(t *testing.T) { boundsListingMemory(t, m, a) })
}

// boundsOpensPerUser: a user holding opens of one file through the
// mount is refused with EMFILE at max_open_per_user, and only that user:
// another user and root still open files at once, clamfuse keeps its
// reserve of descriptors, the refusal is logged once, and the user opens
// again once it closes. Directory handles count the same.
func boundsOpensPerUser(t *testing.T, m *mounttest.Mount, lim fdLimits, a, b testUser) {
	pid := m.Cmd.Process.Pid
	mustDo(t, os.WriteFile(m.Backing("f"), []byte("data"), 0o644))
	mustDo(t, os.Mkdir(m.Backing("d"), 0o755))
	if _, err := os.ReadFile(m.Path("f")); err != nil { // judged once, cached
		t.Fatal(err)
	}
	baseline := fdCount(t, pid)

	var ha *holder
	m.Within(t, 2*time.Minute, "user A's opens", func() {
		ha = startHolder(t, a.cred, "hold", m.Path("f"), strconv.Itoa(4*lim.perUser))
	})
	n, errName := ha.held(t)
	if n != lim.perUser || errName != "EMFILE" {
		t.Fatalf("user A held %d opens and then got %q; want %d (max_open_per_user) and EMFILE", n, errName, lim.perUser)
	}
	during := fdCount(t, pid)
	t.Logf("clamfuse descriptors: %d at rest, %d with user A at its limit (%d)", baseline, during, lim.perUser)
	if during > lim.nofile-lim.reserve {
		t.Errorf("clamfuse holds %d descriptors, over its limit %d minus the reserve %d", during, lim.nofile, lim.reserve)
	}

	// The others are not affected, at once.
	m.Within(t, time.Minute, "opens of others", func() {
		if got := fsop(b.cred, "read", m.Path("f")); got != "ok 4" {
			t.Errorf("user B's open while A is at its limit: %s, want ok 4", got)
		}
		if _, err := os.ReadFile(m.Path("f")); err != nil {
			t.Errorf("root's open while A is at its limit: %v", err)
		}
		hb := startHolder(t, b.cred, "hold", m.Path("f"), "50")
		if n, e := hb.held(t); n != 50 {
			t.Errorf("user B held %d of 50 opens (%s) while A is at its limit", n, e)
		}
		hb.release()
		// A again: still refused; logged once per interval.
		if got := fsop(a.cred, "read", m.Path("f")); got != "EMFILE" {
			t.Errorf("user A's next open at its limit: %s, want EMFILE", got)
		}
		if got := fsop(a.cred, "lstat", m.Path("f")); !strings.HasPrefix(got, "ok") {
			t.Errorf("user A's lstat at its limit: %s (only opens are limited)", got)
		}
	})
	uidField := fmt.Sprintf("uid=%d ", a.uid)
	var warns []string
	for _, l := range m.Log.Lines("max_open_per_user") {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, uidField) {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 {
		t.Errorf("%d WARN lines for user A's refusals, want 1 (the first per interval):\n%s", len(warns), strings.Join(warns, "\n"))
	}

	// A closes: A opens again, files and directories, with the same limit.
	ha.release()
	waitFDsBelow(t, pid, baseline+10, "after user A closed its files")
	m.Within(t, 2*time.Minute, "user A's opens after closing", func() {
		if got := fsop(a.cred, "read", m.Path("f")); got != "ok 4" {
			t.Errorf("user A's open after closing its files: %s, want ok 4", got)
		}
		hd := startHolder(t, a.cred, "holddir", m.Path("d"), strconv.Itoa(lim.perUser+10), "4096")
		if n, e := hd.held(t); n != lim.perUser || e != "EMFILE" {
			t.Errorf("user A held %d directories and then got %q; want %d and EMFILE", n, e, lim.perUser)
		}
		if got := fsop(b.cred, "read", m.Path("f")); got != "ok 4" {
			t.Errorf("user B's open while A holds directories: %s", got)
		}
		hd.release()
	})
}

// boundsFindManyDirs: a user walking 10 000 directories through the
// mount with find leaves clamfuse with a bounded number of descriptors
// (the directory descriptor cache and a few more), and another user's
// opens keep working during and after the walk. (The issue saw 20 000
// directories exhaust a limit of 20 000; here 10 000 are 2.4 times the
// mount's limit of 4096, and the walk takes half as long.)
func boundsFindManyDirs(t *testing.T, m *mounttest.Mount, lim fdLimits, a, b testUser) {
	pid := m.Cmd.Process.Pid
	const ndirs = 10000
	mustDo(t, os.Mkdir(m.Backing("tree"), 0o755))
	for i := range ndirs {
		mustDo(t, unix.Mkdir(m.Backing(fmt.Sprintf("tree/%05d", i)), 0o755))
	}
	mustDo(t, os.WriteFile(m.Backing("g"), []byte("data"), 0o644))
	if got := fsop(b.cred, "read", m.Path("g")); got != "ok 4" {
		t.Fatalf("user B's first open: %s", got)
	}
	baseline := fdCount(t, pid)

	var (
		stop              = make(chan struct{})
		wg                sync.WaitGroup
		maxFDs            atomic.Int64
		bOpens, bFailures atomic.Int64
		bLast             atomic.Value
	)
	wg.Add(2)
	go func() { // clamfuse's descriptors, sampled
		defer wg.Done()
		for {
			if c := int64(fdCount(t, pid)); c > maxFDs.Load() {
				maxFDs.Store(c)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	go func() { // user B keeps opening a file, 20 times a second
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			got := fsop(b.cred, "read", m.Path("g"))
			bOpens.Add(1)
			if got != "ok 4" {
				bFailures.Add(1)
				bLast.Store(got)
			}
		}
	}()
	var out []byte
	var findErr error
	start := time.Now()
	m.Within(t, 3*time.Minute, "find over 10 000 directories", func() {
		cmd := exec.Command("find", m.Path("tree"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.cred}
		out, findErr = cmd.Output()
	})
	close(stop)
	wg.Wait()
	t.Logf("find over %d directories in %v; clamfuse descriptors: %d before, at most %d during (directory cache %d); user B: %d opens, %d failed",
		ndirs, time.Since(start).Round(time.Millisecond), baseline, maxFDs.Load(), lim.dirFDs, bOpens.Load(), bFailures.Load())
	if findErr != nil {
		t.Fatalf("find as user A: %v", findErr)
	}
	if lines := strings.Count(string(out), "\n"); lines != ndirs+1 {
		t.Errorf("find listed %d paths, want %d", lines, ndirs+1)
	}
	if max := int(maxFDs.Load()); max > baseline+lim.dirFDs+64 {
		t.Errorf("clamfuse held up to %d descriptors during the walk: over %d at rest + %d cached directories + 64", max, baseline, lim.dirFDs)
	}
	if n := bFailures.Load(); n > 0 {
		t.Errorf("%d of user B's %d opens failed during the walk; last: %v", n, bOpens.Load(), bLast.Load())
	}
	if got := fsop(b.cred, "read", m.Path("g")); got != "ok 4" {
		t.Errorf("user B's open after the walk: %s", got)
	}
}

// procKiB reads a "Vm...:" field of /proc/PID/status in KiB.
func procKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	mustDo(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			v, err := strconv.Atoi(f[1])
			mustDo(t, err)
			return v
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// boundsListingMemory: 150 directory handles on a directory of 20 000
// long names, each having read one 4 KiB batch of entries, cost clamfuse
// memory independent of the directory's size (each handle used to hold
// the whole listing: 1.27 GB).
func boundsListingMemory(t *testing.T, m *mounttest.Mount, a testUser) {
	pid := m.Cmd.Process.Pid
	const names, handles = 20000, 150
	mustDo(t, os.Mkdir(m.Backing("big"), 0o755))
	long := strings.Repeat("n", 200)
	for i := range names {
		fd, err := unix.Open(m.Backing(fmt.Sprintf("big/%s-%05d", long, i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		mustDo(t, err)
		unix.Close(fd)
	}
	// One full listing first: whatever a listing costs once is paid.
	var listed int
	m.Within(t, time.Minute, "listing", func() {
		ents, err := os.ReadDir(m.Path("big"))
		mustDo(t, err)
		listed = len(ents)
	})
	if listed != names {
		t.Fatalf("listed %d entries, want %d", listed, names)
	}
	before := procKiB(t, pid, "VmRSS")
	var h *holder
	m.Within(t, 2*time.Minute, "150 directory handles", func() {
		h = startHolder(t, a.cred, "holddir", m.Path("big"), strconv.Itoa(handles), "4096")
	})
	if n, e := h.held(t); n != handles {
		t.Fatalf("held %d of %d directory handles (%s)", n, handles, e)
	}
	rss, hwm := procKiB(t, pid, "VmRSS"), procKiB(t, pid, "VmHWM")
	t.Logf("clamfuse VmRSS %d KiB before, %d KiB with %d handles open on %d %d-byte names (VmHWM %d KiB)",
		before, rss, handles, names, len(long)+6, hwm)
	const bound = 32 << 10 // KiB
	if grow := max(rss, hwm) - before; grow > bound {
		t.Errorf("clamfuse grew by %d KiB with %d directory handles open, over %d KiB", grow, handles, bound)
	}
	h.release()
}
