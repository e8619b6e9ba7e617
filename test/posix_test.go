package test

import (
	"os"
	"os/exec"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestPosixSuite runs go-fuse's independent POSIX checks on a clamfuse
// mount, each in a fresh directory, with a real clamd behind it. The bar
// is the native filesystem: the same checks run first on a plain
// directory (in a child test process), and a check that fails there too
// is reported as skipped, not hidden in a list of known failures.
func TestPosixSuite(t *testing.T) {
	nativeFails := posixNativeFailures(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", clamd.Address(), "--timeout", "20s"}})
	for _, name := range posixNames() {
		t.Run(name, func(t *testing.T) {
			if nativeFails[name] {
				t.Skipf("fails on the native filesystem too (baseline)")
			}
			dir := m.Path(name)
			mounttest.MustMkdir(t, dir)
			m.Within(t, time.Minute, name, func() { posixtest.All[name](t, dir) })
		})
	}
}

func posixNames() []string {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// posixNativeFailures runs TestPosixSuiteNative in a child process and
// returns the checks that failed on the native filesystem.
func posixNativeFailures(t *testing.T) map[string]bool {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestPosixSuiteNative$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "CLAMFUSE_POSIX_NATIVE=1")
	out, _ := cmd.CombinedOutput()
	fails := map[string]bool{}
	for _, m := range regexp.MustCompile(`--- FAIL: TestPosixSuiteNative/(\w+)`).FindAllSubmatch(out, -1) {
		fails[string(m[1])] = true
	}
	if !regexp.MustCompile(`--- (PASS|FAIL): TestPosixSuiteNative/`).Match(out) {
		t.Fatalf("native baseline did not run:\n%s", out)
	}
	t.Logf("checks failing natively (baseline): %v", fails)
	return fails
}

// TestPosixSuiteNative runs the same checks on a plain directory: the
// baseline. It runs as a child of TestPosixSuite (or by hand with
// CLAMFUSE_POSIX_NATIVE=1).
func TestPosixSuiteNative(t *testing.T) {
	if os.Getenv("CLAMFUSE_POSIX_NATIVE") == "" {
		t.Skip("baseline for TestPosixSuite, which runs it as a child process")
	}
	base := t.TempDir()
	for _, name := range posixNames() {
		t.Run(name, func(t *testing.T) {
			dir := base + "/" + name
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
}
