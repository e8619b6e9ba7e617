package fs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"
)

// TestMain releases the mounts this binary serves (testMountGate tracks
// them) shortly before go test's timeout would kill it: they would stay
// behind as dead mountpoints.
func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m))
}

// watchdogHelperEnv makes TestWatchdogHelper mount and hang.
const watchdogHelperEnv = "CLAMFUSE_TEST_WATCHDOG_HELPER"

// TestWatchdogReleasesMounts: a test binary whose test hangs with a mount
// served in-process does not leave that mount behind when go test's
// timeout comes: the watchdog aborts and detaches it 20 s before. The
// binary runs again with a timeout of 21 s (the watchdog fires after 1 s)
// and TestWatchdogHelper, which mounts and blocks for ever; the mount
// must be gone while the binary still hangs, and after it is killed.
func TestWatchdogReleasesMounts(t *testing.T) {
	if why := mountUnavailable(); why != "" {
		testenv.Skip(t, "mounted test: %s", why)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchdogHelper$", "-test.timeout=21s")
	cmd.Env = append(os.Environ(), watchdogHelperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var target string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "mounted "); ok {
			target = p
			break
		}
	}
	if target == "" {
		t.Fatal("the helper did not mount")
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	mounted := func() bool { _, ok := testenvFuseConns()[target]; return ok }
	deadline := time.Now().Add(15 * time.Second)
	for mounted() {
		if time.Now().After(deadline) {
			abortMount(t, target)
			t.Fatalf("%s still mounted 15 s after the helper mounted it with its watchdog due after 1 s", target)
		}
		time.Sleep(20 * time.Millisecond) // polls a condition
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the helper exited before its mount was released: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if mounted() {
		t.Fatalf("%s mounted again after the helper died", target)
	}
}

// TestWatchdogHelper mounts and hangs when TestWatchdogReleasesMounts
// runs it; otherwise it does nothing (the os/exec tests' idiom).
func TestWatchdogHelper(t *testing.T) {
	if os.Getenv(watchdogHelperEnv) == "" {
		return
	}
	_, m, _ := testMount(t, MountOptions{})
	fmt.Println("mounted " + m.Target)
	select {}
}

// testenvFuseConns lists this namespace's FUSE mountpoints.
func testenvFuseConns() map[string]bool {
	out := map[string]bool{}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 9 && strings.HasPrefix(fields[len(fields)-3], "fuse") {
			out[fields[4]] = true
		}
	}
	return out
}
