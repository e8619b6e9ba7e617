// Package mounttest runs the built clamfuse binary on a real FUSE mount for
// tests, and makes sure no test can wedge the machine: every mount it makes
// is unmounted (lazily if busy) at cleanup, and a mount whose requests hang
// has its FUSE connection aborted through fusectl, which fails the hung
// calls with ENOTCONN instead of leaving callers in D state.
package mounttest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	cffs "github.com/clamfuse/clamfuse/fs"
	"github.com/clamfuse/clamfuse/test/testenv"
)

const fusectl = "/sys/fs/fuse/connections"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error

	liveMu sync.Mutex
	live   = map[*Mount]struct{}{} // mounts not yet torn down, for the watchdog
)

// Available says why FUSE mounts cannot run here, or "" when they can.
func Available() string {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "no /dev/fuse: " + err.Error()
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return "fusermount3 not installed (Debian package fuse3)"
	}
	if os.Geteuid() != 0 {
		return "mounted tests run as root"
	}
	return ""
}

// Require skips the test when FUSE mounts cannot run here, saying why
// (testenv.Skip: with CI=true it fails the test instead).
func Require(t testing.TB) {
	t.Helper()
	if why := Available(); why != "" {
		testenv.Skip(t, "mounted test: %s", why)
	}
	if err := ensureFusectl(); err != nil {
		t.Fatalf("fusectl: %v", err)
	}
}

func ensureFusectl() error {
	if _, err := os.Stat(filepath.Join(fusectl, ".")); err == nil {
		var st unix.Statfs_t
		if unix.Statfs(fusectl, &st) == nil && st.Type == 0x65735543 { // FUSECTL_SUPER_MAGIC
			return nil
		}
	}
	return unix.Mount("fusectl", fusectl, "fusectl", 0, "")
}

// Binary builds bin/clamfuse once per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "clamfuse-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "clamfuse")
		cmd := exec.Command("go", "build", "-race", "-o", binPath, "github.com/clamfuse/clamfuse/cmd/clamfuse")
		if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
			cmd.Args = []string{"go", "build", "-o", binPath, "github.com/clamfuse/clamfuse/cmd/clamfuse"}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Mount is a running clamfuse process and its mount.
type Mount struct {
	Source, Target string
	Cmd            *exec.Cmd
	Log            *testenv.SyncBuffer // clamfuse's stdout and stderr
	conn           int                 // fusectl connection number, -1 if unknown
	exited         chan struct{}
	exitErr        error
	t              testing.TB
	once           sync.Once
}

// Options for Start.
type Options struct {
	Source, Target string   // default: new dirs in t.TempDir()
	Config         string   // TOML written to a file and passed with --config
	Args           []string // extra mount arguments
	Wrap           []string // a command line clamfuse runs under (e.g. setpriv ... --), if any
	NoWait         bool     // do not wait for the mount (for tests of failures)
	// NoFile, when not 0, is clamfuse's RLIMIT_NOFILE (soft and hard),
	// set with prlimit(1) before it starts, for tests of its limits.
	NoFile int
}

// Start runs `clamfuse mount` and waits until the mount is live. The
// mount is torn down when t ends (Teardown), and t fails if the
// race-enabled clamfuse reported a data race meanwhile.
func Start(t testing.TB, opts Options) *Mount {
	t.Helper()
	Require(t)
	bin := Binary(t)
	dir := t.TempDir()
	if opts.Source == "" {
		opts.Source = filepath.Join(dir, "src")
		MustMkdir(t, opts.Source)
	}
	if opts.Target == "" {
		opts.Target = filepath.Join(dir, "mnt")
		MustMkdir(t, opts.Target)
	}
	args := []string{"mount"}
	if opts.Config != "" {
		cfg := filepath.Join(dir, "clamfuse.toml")
		if err := os.WriteFile(cfg, []byte(opts.Config), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", cfg)
	}
	args = append(args, opts.Args...)
	args = append(args, opts.Source, opts.Target)
	m := &Mount{Source: opts.Source, Target: opts.Target, Log: &testenv.SyncBuffer{}, conn: -1, exited: make(chan struct{}), t: t}
	m.Cmd = exec.Command(bin, args...)
	// Wrap runs first (e.g. setpriv ... --), then prlimit if NoFile is
	// set; both exec the next, so the process (and its pid) ends as
	// clamfuse's.
	cmdline := append([]string{bin}, args...)
	if opts.NoFile > 0 {
		cmdline = append([]string{"prlimit", fmt.Sprintf("--nofile=%d:%d", opts.NoFile, opts.NoFile), "--"}, cmdline...)
	}
	if len(opts.Wrap) > 0 {
		cmdline = append(append([]string{}, opts.Wrap...), cmdline...)
	}
	if len(cmdline) > 1+len(args) {
		m.Cmd = exec.Command(cmdline[0], cmdline[1:]...)
	}
	m.Cmd.Stdout = m.Log
	m.Cmd.Stderr = m.Log
	m.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The race runtime sleeps a second at exit by default, a second per
	// mount torn down; its reports are written when found, not at exit.
	m.Cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	// Start and reap clamfuse on one locked OS thread that lives exactly
	// as long as clamfuse: Pdeathsig fires when the thread that forked
	// the child exits, not the process, and the runtime ends a thread
	// whose goroutine exits locked (as clamdtest's do when a clamd
	// stops), which killed clamfuses forked on it earlier.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with us
		if err := m.Cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		m.exitErr = m.Cmd.Wait()
		close(m.exited)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	liveMu.Lock()
	live[m] = struct{}{}
	liveMu.Unlock()
	t.Cleanup(m.Teardown)
	if opts.NoWait {
		return m
	}
	deadline := time.Now().Add(20 * time.Second)
	for !m.Mounted() {
		select {
		case <-m.exited:
			t.Fatalf("clamfuse exited before mounting: %v\n%s", m.exitErr, m.Log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount not live after 20s\n%s", m.Log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var st unix.Stat_t
	if err := unix.Stat(m.Target, &st); err == nil {
		m.conn = int(unix.Minor(st.Dev))
	}
	return m
}

// Mounted reports whether a clamfuse mount is on Target.
func (m *Mount) Mounted() bool { return IsFuseMount(m.Target) }

// IsFuseMount reports whether p is the mountpoint of a FUSE mount.
func IsFuseMount(p string) bool { return cffs.IsFuseMount(p) }

// Path joins name to the mountpoint.
func (m *Mount) Path(name string) string { return filepath.Join(m.Target, name) }

// Backing joins name to the source directory.
func (m *Mount) Backing(name string) string { return filepath.Join(m.Source, name) }

// Exited is closed when the clamfuse process has exited.
func (m *Mount) Exited() <-chan struct{} { return m.exited }

// ExitCode waits up to d for the process and returns its exit code.
func (m *Mount) ExitCode(d time.Duration) (int, error) {
	select {
	case <-m.exited:
	case <-time.After(d):
		return -1, fmt.Errorf("clamfuse still running after %v", d)
	}
	if m.exitErr == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(m.exitErr, &ee) {
		return ee.ExitCode(), nil
	}
	return -1, m.exitErr
}

// Signal sends sig to clamfuse.
func (m *Mount) Signal(sig os.Signal) error { return m.Cmd.Process.Signal(sig) }

// Abort aborts the FUSE connection: every pending and future request of
// this mount fails with ENOTCONN. It is how a hung mount is cleared.
// Only while this mount is still the one on Target: once it is gone its
// connection number may be another's (a mount made since on Target, or
// by another test binary anywhere), which must not be aborted.
func (m *Mount) Abort() {
	if m.conn >= 0 && connAt(m.Target) == m.conn {
		_ = os.WriteFile(filepath.Join(fusectl, strconv.Itoa(m.conn), "abort"), []byte("1"), 0)
	}
}

// AbortDetached aborts the connection of this mount once it is detached
// from Target (umount -l with files still open), while clamfuse still
// runs: the connection, and so its number, is still clamfuse's.
func (m *Mount) AbortDetached() error {
	select {
	case <-m.exited:
		return fmt.Errorf("clamfuse has exited: connection %d may be another's now", m.conn)
	default:
	}
	if m.conn < 0 || connAt(m.Target) == m.conn {
		return fmt.Errorf("connection %d: not a detached mount of this test", m.conn)
	}
	return os.WriteFile(filepath.Join(fusectl, strconv.Itoa(m.conn), "abort"), []byte("1"), 0)
}

// connAt is the device minor (a FUSE mount's fusectl connection number)
// of the mount on dir, the topmost, from /proc/self/mountinfo (no request
// to a FUSE server, which may hang), or -1 if nothing is mounted there.
func connAt(dir string) int {
	mounts, err := ReadMounts()
	if err != nil {
		return -1
	}
	conn := -1
	for _, mi := range mounts {
		if mi.MountPoint == dir {
			conn = mi.Minor
		}
	}
	return conn
}

// Waiting is the number of this mount's FUSE requests the server has not
// answered yet (fusectl's waiting), or -1 if it cannot be read.
func (m *Mount) Waiting() int {
	if m.conn < 0 {
		return -1
	}
	b, err := os.ReadFile(filepath.Join(fusectl, strconv.Itoa(m.conn), "waiting"))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// raceReport is how the race detector starts a report.
const raceReport = "WARNING: DATA RACE"

// Teardown stops clamfuse and makes sure nothing stays mounted: SIGTERM,
// then abort and lazy unmount if it does not go away. Then it fails the
// test if clamfuse, built with -race, reported a data race: it goes on
// serving after one, so nothing else would notice. Start registers it
// with t.Cleanup; calling it earlier is fine.
func (m *Mount) Teardown() {
	m.once.Do(func() {
		defer func() {
			liveMu.Lock()
			delete(live, m)
			liveMu.Unlock()
		}()
		select {
		case <-m.exited:
		default:
			_ = m.Cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.exited:
			case <-time.After(10 * time.Second):
				m.t.Logf("clamfuse did not exit on SIGTERM; aborting the connection")
				m.Abort()
				_ = m.Cmd.Process.Kill()
				<-m.exited
			}
		}
		if m.Mounted() {
			m.Abort()
			_ = unix.Unmount(m.Target, unix.MNT_DETACH)
		}
		if n := len(m.Log.Lines(raceReport)); n > 0 {
			m.t.Errorf("clamfuse reported %d data race(s) (%q in its output)", n, raceReport)
		}
		if m.t.Failed() {
			m.t.Logf("clamfuse log:\n%s", m.Log.String())
		}
	})
}

// Within runs fn and fails the test if it takes longer than d; then the
// mount's connection is aborted, which unblocks fn.
func (m *Mount) Within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		m.Abort()
		<-done
		t.Fatalf("%s: still blocked after %v; connection aborted", what, d)
	}
}

// AbortAll aborts and lazily unmounts every live mount; the test binary's
// watchdog calls it before go test's own timeout would kill the process
// with mounts (and callers) left hanging.
func AbortAll() {
	liveMu.Lock()
	defer liveMu.Unlock()
	for m := range live {
		m.Abort()
		_ = unix.Unmount(m.Target, unix.MNT_DETACH)
		if m.Cmd.Process != nil {
			_ = m.Cmd.Process.Kill()
		}
	}
}

// Watchdog calls AbortAll shortly before the test binary's deadline. Use
// it from TestMain: defer mounttest.Watchdog()().
func Watchdog(deadline time.Time) func() {
	d := time.Until(deadline) - 20*time.Second
	if d < time.Second {
		d = time.Second
	}
	timer := time.AfterFunc(d, func() {
		fmt.Fprintln(os.Stderr, "mounttest: watchdog: aborting all mounts before the test deadline")
		AbortAll()
	})
	return func() { timer.Stop() }
}

// MustMkdir makes dir or fails the test.
func MustMkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// WaitLogLines polls the clamfuse log for up to d until a line contains
// every one of substrs, and returns the lines that do; it fails t when
// none shows up in time. The log is written just after the event it
// reports, so tests poll for it rather than read it once.
func (m *Mount) WaitLogLines(t testing.TB, d time.Duration, substrs ...string) []string {
	t.Helper()
	return m.WaitLogLinesAfter(t, d, 0, substrs...)
}

// WaitLogLinesAfter is WaitLogLines for more than n such lines: for an
// event that logs the same line each time it happens, after the test
// counted n of them.
func (m *Mount) WaitLogLinesAfter(t testing.TB, d time.Duration, n int, substrs ...string) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var out []string
		for _, l := range m.Log.Lines("") {
			all := true
			for _, s := range substrs {
				if !strings.Contains(l, s) {
					all = false
					break
				}
			}
			if all {
				out = append(out, l)
			}
		}
		if len(out) > n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no more than %d clamfuse log lines with all of %q after %v; log:\n%s", n, substrs, d, m.Log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// MountInfo is one mount of this mount namespace, from a line of
// /proc/self/mountinfo (proc(5)).
type MountInfo struct {
	Minor      int    // of the mount's device: a FUSE mount's fusectl connection
	MountPoint string // unescaped
	Options    string // the per-mount options: "rw,nosuid,nodev,relatime"
	FSType     string // "fuse.clamfuse", "tmpfs", ...
	Source     string // unescaped; clamfuse's FUSE fsname is its source directory
}

// ReadMounts parses /proc/self/mountinfo.
func ReadMounts() ([]MountInfo, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []MountInfo
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || sep+2 >= len(f) {
			return nil, fmt.Errorf("/proc/self/mountinfo: malformed line %q", line)
		}
		minor := -1
		if _, m, ok := strings.Cut(f[2], ":"); ok {
			if n, err := strconv.Atoi(m); err == nil {
				minor = n
			}
		}
		out = append(out, MountInfo{
			Minor:      minor,
			MountPoint: unescapeMountinfo(f[4]),
			Options:    f[5],
			FSType:     f[sep+1],
			Source:     unescapeMountinfo(f[sep+2]),
		})
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, \011,
// \012, \134) of mountinfo's fields.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mounts returns this namespace's mounts, failing t when mountinfo
// cannot be read: a test that checks what is (not) mounted must not pass
// for want of looking.
func Mounts(t testing.TB) []MountInfo {
	t.Helper()
	ms, err := ReadMounts()
	if err != nil {
		t.Fatalf("reading the mount table: %v", err)
	}
	return ms
}

// MountsOn returns the mounts whose mountpoint is p, bottom first (the
// last one is what p shows).
func MountsOn(t testing.TB, p string) []MountInfo {
	t.Helper()
	var out []MountInfo
	for _, m := range Mounts(t) {
		if m.MountPoint == p {
			out = append(out, m)
		}
	}
	return out
}

// MountedBy reports whether any mount in this namespace has p as its
// mountpoint or as its source (the FUSE fsname clamfuse sets), for tests
// that check that nothing got mounted. When the mount table cannot be
// read it reports true: it cannot say that nothing is. Tests with a t
// should use Mounts, which fails t instead.
func MountedBy(p string) bool {
	ms, err := ReadMounts()
	if err != nil {
		return true
	}
	for _, m := range ms {
		if m.MountPoint == p || m.Source == p {
			return true
		}
	}
	return false
}

// TypeName names the file type in a stat mode ("reg", "dir", "lnk",
// "fifo", "sock", "chr", "blk"), for comparing trees in tests.
func TypeName(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return "reg"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "lnk"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "sock"
	case unix.S_IFCHR:
		return "chr"
	case unix.S_IFBLK:
		return "blk"
	}
	return "?"
}
