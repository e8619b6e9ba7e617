package fs

// Mounted tests of fs.Mount: clamfuse's file system, a real gate asking a
// private clamd, on a real FUSE mount, driven by other processes (dd).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// requests records the READ and WRITE requests a mount serves.
type requests struct {
	mu     sync.Mutex
	reads  []int                          // sizes asked for
	writes []int                          // sizes carried
	ops    map[string]int                 // requests of each type (%T), since the last takeOps
	nodes  map[fuse.NodeID]map[string]int // the same, by node
}

func (r *requests) observe(req fuse.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ops == nil {
		r.ops = map[string]int{}
	}
	op := strings.TrimPrefix(fmt.Sprintf("%T", req), "*fuse.")
	if x, ok := req.(*fuse.GetxattrRequest); ok {
		op += " " + x.Name
	}
	r.ops[op]++
	if r.nodes == nil {
		r.nodes = map[fuse.NodeID]map[string]int{}
	}
	if r.nodes[req.Hdr().Node] == nil {
		r.nodes[req.Hdr().Node] = map[string]int{}
	}
	r.nodes[req.Hdr().Node][op]++
	switch req := req.(type) {
	case *fuse.ReadRequest:
		if !req.Dir {
			r.reads = append(r.reads, req.Size)
		}
	case *fuse.WriteRequest:
		r.writes = append(r.writes, len(req.Data))
	}
}

// take returns the READs and WRITEs since the last take.
func (r *requests) take() (reads, writes []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reads, writes, r.reads, r.writes = r.reads, r.writes, nil, nil
	return reads, writes
}

// takeOps returns the count of requests of each type since the last
// takeOps.
func (r *requests) takeOps() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := r.ops
	r.ops, r.nodes = nil, nil
	return ops
}

// nodeOps is takeOps for the node id alone; it takes them all.
func (r *requests) nodeOps(id fuse.NodeID) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := r.nodes[id]
	r.ops, r.nodes = nil, nil
	return ops
}

// testMount mounts clamfuse over a fresh backing directory, judged by a
// private clamd, with mo's other fields, and unmounts it at cleanup (the
// connection is aborted if that hangs).
func testMount(t testing.TB, mo MountOptions) (backing string, m *Mounted, seen *requests) {
	t.Helper()
	return testMountGate(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour, Timeout: time.Minute})
}

// testMountGate is testMount with a gate of options gopts.
func testMountGate(t testing.TB, mo MountOptions, gopts cache.Options) (backing string, m *Mounted, seen *requests) {
	t.Helper()
	backing, m, seen, _ = testMountClamd(t, mo, gopts)
	return backing, m, seen
}

// testMountClamd is testMountGate that also returns the gate's clamd.
func testMountClamd(t testing.TB, mo MountOptions, gopts cache.Options) (backing string, m *Mounted, seen *requests, c *clamdtest.Clamd) {
	t.Helper()
	if why := mountUnavailable(); why != "" {
		testenv.Skip(t, "mounted test: %s", why)
	}
	c = clamdtest.New(t, clamdtest.Options{})
	client, err := clamav.New(clamav.Options{Network: "unix", Address: c.Socket, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	real := cache.NewGate(client, gopts)
	if g, ok := mo.FS.Gate.(interface{ wrap(Gate) }); ok {
		g.wrap(real)
	} else {
		mo.FS.Gate = real
	}
	backing, target := mo.Source, mo.Target
	if target == "" {
		target = t.TempDir()
	}
	if backing == "" {
		backing = t.TempDir()
	}
	mo.Source, mo.Target = backing, target
	seen = &requests{}
	if own := mo.observe; own != nil {
		mo.observe = func(req fuse.Request) { seen.observe(req); own(req) }
	} else {
		mo.observe = seen.observe
	}
	m, err = Mount(mo)
	if err != nil {
		t.Fatal(err)
	}
	untrack := testenv.TrackMount(target)
	t.Cleanup(func() {
		defer untrack()
		unmounted := make(chan error, 1)
		go func() {
			if err := m.Unmount(); err != nil {
				unmounted <- err
				return
			}
			unmounted <- m.Wait(time.Minute)
		}()
		select {
		case err := <-unmounted:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(2 * time.Minute):
			abortMount(t, target)
			t.Error("unmount hung; the connection was aborted")
		}
	})
	return backing, m, seen, c
}

// mountUnavailable says why FUSE mounts cannot run here, or "".
func mountUnavailable() string {
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

// abortMount aborts the FUSE connection mounted on dir through fusectl.
func abortMount(t testing.TB, dir string) {
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
		if _, minor, ok := strings.Cut(fields[2], ":"); ok {
			err := os.WriteFile(filepath.Join("/sys/fs/fuse/connections", minor, "abort"), []byte("1"), 0)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Logf("abort: %v", err)
			}
		}
	}
	_ = exec.Command("umount", "-l", dir).Run()
}

// runOn runs a command against the mount m from another process, within
// a minute (else the connection is aborted), and returns its output.
func runOn(t *testing.T, m *Mounted, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := hangReported(t, exec.CommandContext(ctx, name, args...)).CombinedOutput()
	if ctx.Err() != nil {
		abortMount(t, m.Target)
		t.Fatalf("%s %q: no answer within a minute; the connection was aborted", name, args)
	}
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// hangReported makes cmd, when its context ends before it does, log what
// it waits for in the kernel and what every goroutine of this binary (the
// mount's server) is doing, before it is killed: a hang is then a report,
// not just a timeout.
func hangReported(t testing.TB, cmd *exec.Cmd) *exec.Cmd {
	cmd.Cancel = func() error {
		pid := cmd.Process.Pid
		stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", pid))
		var all strings.Builder
		pprof.Lookup("goroutine").WriteTo(&all, 2)
		t.Logf("%s (pid %d) still running at its deadline; its kernel stack:\n%s\nthe server's goroutines:\n%s", cmd.Args, pid, stack, all.String())
		return cmd.Process.Kill()
	}
	return cmd
}

// TestMountBigRequests checks that clamfuse's mount gets 1 MiB READs and
// WRITEs (fuse.InitMaxPages, and the readahead raised to match): a 1 MiB
// read(2) or write(2) through the mount arrives as one request.
func TestMountBigRequests(t *testing.T) {
	const mib = 1 << 20
	backing, m, seen := testMount(t, MountOptions{})
	if m.conn.Features()&fuse.InitMaxPages == 0 {
		t.Fatalf("InitMaxPages not granted: %v", m.conn.Features())
	}
	data := make([]byte, mib)
	for i := range data {
		data[i] = byte(i % 251)
	}
	if err := os.WriteFile(filepath.Join(backing, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(m.Target, "f")
	for _, tc := range []struct {
		name       string
		args       []string
		reads, wri int // requests of 1 MiB expected
	}{
		{"buffered read", []string{"if=" + f, "of=/dev/null", "bs=1M", "count=1"}, 1, 0},
		{"direct read", []string{"if=" + f, "of=/dev/null", "bs=1M", "count=1", "iflag=direct"}, 1, 0},
		{"buffered write", []string{"if=" + filepath.Join(backing, "f"), "of=" + f, "bs=1M", "count=1", "conv=notrunc"}, 0, 1},
		{"direct write", []string{"if=" + filepath.Join(backing, "f"), "of=" + f, "bs=1M", "count=1", "conv=notrunc", "oflag=direct"}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen.take()
			runOn(t, m, "dd", tc.args...)
			reads, writes := seen.take()
			t.Logf("READs %v, WRITEs %v", reads, writes)
			if len(reads) != tc.reads || (tc.reads > 0 && reads[0] != mib) {
				t.Errorf("READs of %v bytes, want %d of 1 MiB", reads, tc.reads)
			}
			if len(writes) != tc.wri || (tc.wri > 0 && writes[0] != mib) {
				t.Errorf("WRITEs of %v bytes, want %d of 1 MiB", writes, tc.wri)
			}
		})
	}
	got, err := os.ReadFile(filepath.Join(backing, "f"))
	if err != nil || string(got) != string(data) {
		t.Errorf("the backing file changed: %d bytes, %v", len(got), err)
	}
}

// openToAll lets every user reach and write the backing directory and
// the mountpoint (mode 0777 on both and on the mountpoint's parent), for
// tests that act as other users.
func openToAll(t *testing.T, backing string, m *Mounted) {
	t.Helper()
	for _, p := range []string{backing, m.Target, filepath.Dir(m.Target)} {
		mustDo(t, os.Chmod(p, 0o777))
	}
}
