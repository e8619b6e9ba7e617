package fusefs

// Mounted tests of the protocol pieces clamfuse adds: a small in-memory
// file system served by this package on a real FUSE mount, driven from
// another process (this test binary run as a helper, or coreutils), never
// from the serving process's own goroutines.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// helperEnv names the operation the test binary performs when run as a
// helper process (see TestMain).
const helperEnv = "FUSEFS_TEST_HELPER"

func TestMain(m *testing.M) {
	if op := os.Getenv(helperEnv); op != "" {
		os.Exit(runHelper(op, os.Args[1:]))
	}
	// Release the mounts this binary serves shortly before go test's
	// timeout would kill it and leave them behind as dead mountpoints.
	os.Exit(testenv.Run(m))
}

// requireFUSE skips the test, loudly, when FUSE mounts cannot run here,
// and fails it instead when CI is set.
func requireFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse: " + err.Error()
	} else if _, err := exec.LookPath("fusermount3"); err != nil {
		why = "fusermount3 not installed (Debian package fuse3)"
	} else if os.Geteuid() != 0 {
		why = "mounted tests run as root"
	}
	if why == "" {
		return
	}
	testenv.Skip(t, "mounted test: %s", why)
}

// mounted is a test file system being served.
type mounted struct {
	dir  string
	conn *fuse.Conn
	srv  *Server
}

// mount serves fsys on a new temporary directory with opts until the test
// ends; the unmount at cleanup aborts the connection if it hangs.
func mount(t *testing.T, fsys FS, opts ...fuse.MountOption) *mounted {
	t.Helper()
	return mountWith(t, fsys, nil, opts...)
}

// mountWith is mount with the server's config.
func mountWith(t *testing.T, fsys FS, config *Config, opts ...fuse.MountOption) *mounted {
	t.Helper()
	return mountServe(t, fsys, config, nil, opts...)
}

// mountServe is mountWith, calling before (if not nil) with the server
// just before it is served.
func mountServe(t *testing.T, fsys FS, config *Config, before func(*Server), opts ...fuse.MountOption) *mounted {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	c, err := fuse.Mount(dir, append([]fuse.MountOption{fuse.FSName("fusefs-test"), fuse.Subtype("fusefstest")}, opts...)...)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	srv := New(c, config)
	if before != nil {
		before(srv)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(fsys) }()
	untrack := testenv.TrackMount(dir)
	t.Cleanup(func() {
		defer untrack()
		unmounted := make(chan error, 1)
		go func() { unmounted <- fuse.Unmount(dir) }()
		select {
		case err := <-unmounted:
			if err != nil {
				t.Errorf("Unmount: %v", err)
			}
		case <-time.After(time.Minute):
			abort(t, dir)
			t.Error("unmount hung; the connection was aborted")
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(time.Minute):
			abort(t, dir)
			t.Error("serving did not end after the unmount; the connection was aborted")
		}
		c.Close()
	})
	return &mounted{dir: dir, conn: c, srv: srv}
}

// abort aborts the FUSE connection mounted on dir through fusectl, found
// in /proc/self/mountinfo (not by stat, which would ask the mount itself).
func abort(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Logf("abort: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[4] != dir {
			continue
		}
		_, minor, ok := strings.Cut(fields[2], ":")
		if !ok {
			continue
		}
		err := os.WriteFile(filepath.Join("/sys/fs/fuse/connections", minor, "abort"), []byte("1"), 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("abort: %v", err)
		}
		_ = exec.Command("umount", "-l", dir).Run()
		return
	}
}

// run runs a command on the mount from another process, with a deadline
// (the mount's connection is aborted if it is missed), and returns its
// output.
func (m *mounted) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		abort(t, m.dir)
		t.Fatalf("%s %q: no answer within a minute; the connection was aborted", name, args)
	}
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// helper runs this test binary as a helper process performing op on the
// mount (see runHelper), and returns what it printed: "ok ..." or an
// errno name.
func (m *mounted) helper(t *testing.T, op string, args ...string) string {
	t.Helper()
	if len(args) != helperArgs(op) {
		t.Fatalf("helper %s takes %d arguments", op, helperArgs(op))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+op)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		abort(t, m.dir)
		t.Fatalf("helper %s %q: no answer within a minute; the connection was aborted", op, args)
	}
	if err != nil {
		t.Fatalf("helper %s %q: %v\n%s", op, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// helperOps are the operations of a helper process, by name: how many
// arguments each takes, and what it does.
var helperOps = map[string]struct {
	args int
	run  func(args []string) (string, error)
}{}

func helperArgs(op string) int { return helperOps[op].args }

// runHelper performs op and prints "ok" and its result, or the errno.
func runHelper(op string, args []string) int {
	h, ok := helperOps[op]
	if !ok {
		fmt.Fprintf(os.Stderr, "no helper operation %q\n", op)
		return 2
	}
	res, err := h.run(args)
	var errno syscall.Errno
	switch {
	case err == nil:
		fmt.Println(strings.TrimSpace("ok " + res))
	case errors.As(err, &errno):
		fmt.Println(errnoName(errno))
	default:
		fmt.Println(err)
	}
	return 0
}

func errnoName(e syscall.Errno) string {
	for _, n := range []struct {
		e    syscall.Errno
		name string
	}{
		{syscall.EINVAL, "EINVAL"}, {syscall.EEXIST, "EEXIST"}, {syscall.ENOENT, "ENOENT"},
		{syscall.EOPNOTSUPP, "EOPNOTSUPP"}, {syscall.EPERM, "EPERM"}, {syscall.EIO, "EIO"},
		{syscall.ENOSYS, "ENOSYS"}, {syscall.EACCES, "EACCES"},
	} {
		if n.e == e {
			return n.name
		}
	}
	return fmt.Sprintf("errno %d", int(e))
}

// counter counts requests by kind, for tests to see what reached the
// server.
type counter struct {
	mu sync.Mutex
	n  map[string][]int // kind -> sizes
}

func (c *counter) add(kind string, size int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string][]int{}
	}
	c.n[kind] = append(c.n[kind], size)
}

// take returns the sizes of the requests of kind since the last take.
func (c *counter) take(kind string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.n[kind]
	delete(c.n, kind)
	return s
}
