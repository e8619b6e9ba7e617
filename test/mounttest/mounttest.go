// Package mounttest runs the built clamfuse binary on a real FUSE mount for
// tests, and makes sure no test can wedge the machine: every mount it makes
// is unmounted (lazily if busy) at cleanup, and a mount whose requests hang
// has its FUSE connection aborted through fusectl, which fails the hung
// calls with ENOTCONN instead of leaving callers in D state.
package mounttest

import (
	cffs "github.com/clamfuse/clamfuse/fs"

	"bufio"
	"bytes"
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

// Require skips the test when FUSE is missing, or fails it when CI is set:
// in CI a skipped mounted test is a failure.
func Require(t testing.TB) {
	t.Helper()
	if why := Available(); why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("FUSE tests required in CI: %s", why)
		}
		t.Skipf("SKIPPING mounted test: %s", why)
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
	Log            *syncBuffer
	conn           int // fusectl connection number, -1 if unknown
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
}

// Start runs `clamfuse mount` and waits until the mount is live.
func Start(t testing.TB, opts Options) *Mount {
	t.Helper()
	Require(t)
	bin := Binary(t)
	dir := t.TempDir()
	if opts.Source == "" {
		opts.Source = filepath.Join(dir, "src")
		must(t, os.Mkdir(opts.Source, 0o755))
	}
	if opts.Target == "" {
		opts.Target = filepath.Join(dir, "mnt")
		must(t, os.Mkdir(opts.Target, 0o755))
	}
	args := []string{"mount"}
	if opts.Config != "" {
		cfg := filepath.Join(dir, "clamfuse.toml")
		must(t, os.WriteFile(cfg, []byte(opts.Config), 0o644))
		args = append(args, "--config", cfg)
	}
	args = append(args, opts.Args...)
	args = append(args, opts.Source, opts.Target)
	m := &Mount{Source: opts.Source, Target: opts.Target, Log: &syncBuffer{}, conn: -1, exited: make(chan struct{}), t: t}
	m.Cmd = exec.Command(bin, args...)
	if len(opts.Wrap) > 0 {
		m.Cmd = exec.Command(opts.Wrap[0], append(append(opts.Wrap[1:len(opts.Wrap):len(opts.Wrap)], bin), args...)...)
	}
	m.Cmd.Stdout = m.Log
	m.Cmd.Stderr = m.Log
	m.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, m.Cmd.Start())
	go func() { m.exitErr = m.Cmd.Wait(); close(m.exited) }()
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

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
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
func (m *Mount) Abort() {
	if m.conn >= 0 {
		_ = os.WriteFile(filepath.Join(fusectl, strconv.Itoa(m.conn), "abort"), []byte("1"), 0)
	}
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

// Teardown stops clamfuse and makes sure nothing stays mounted: SIGTERM,
// then abort and lazy unmount if it does not go away.
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

// syncBuffer is a goroutine-safe log buffer.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the log lines containing substr.
func (b *syncBuffer) Lines(substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
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
		if len(out) > 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clamfuse log line with all of %q after %v; log:\n%s", substrs, d, m.Log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// MountedBy reports whether any mount in this namespace has p as its
// mountpoint or as its source (the FUSE fsname clamfuse sets), for tests
// that check that nothing got mounted.
func MountedBy(p string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		if f[4] == p {
			return true
		}
		for i, x := range f {
			if x == "-" && i+2 < len(f) && f[i+2] == p {
				return true
			}
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
