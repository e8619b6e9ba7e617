package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// posixMountSkips are the checks that skip themselves on a clamfuse mount
// although they pass on the native filesystem, with what their skip
// says: known limits, each pinned here (a check that passes on the mount
// again fails this test, to be updated).
var posixMountSkips = map[string]string{
	// An open directory renamed away behind its descriptor: fstat of it
	// through the mount fails with ESTALE (go-fuse's own posixtest
	// calls it a known limitation, hanwen/go-fuse#55).
	"RenameOpenDir": "Fstat failed: stale file handle",
}

// TestPosixSuite runs go-fuse's independent POSIX checks (posixtest) on a
// clamfuse mount, each in a fresh directory, with a real clamd behind it.
// The bar is the native filesystem: the same checks run on a plain
// directory, and each must end on the mount as it does natively. Both
// runs are child processes of this test binary (go tool test2json reports
// their outcomes), which run this very test with CLAMFUSE_POSIX_DIR set.
//
// It runs in both passthrough modes (ptMode). A check that passes on the mount passes (some, such as OpenSymlinkRace,
// cannot pass natively: a native open follows the symlink it races). One
// that fails natively too says nothing about clamfuse; one that skips
// itself natively and on the mount alike (the backing filesystem lacks
// what it needs, as large xattrs on ext4) cannot be exercised here: both
// pass, recorded as known limits that make test lists.
func TestPosixSuite(t *testing.T) {
	if dir := os.Getenv("CLAMFUSE_POSIX_DIR"); dir != "" {
		for _, name := range posixNames() {
			t.Run(name, func(t *testing.T) {
				d := filepath.Join(dir, name)
				mustDo(t, os.Mkdir(d, 0o755))
				posixtest.All[name](t, d)
			})
		}
		return
	}
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	native := posixChild(t, t.TempDir())
	inPtModes(t, func(t *testing.T, pm ptMode) {
		m := mounttest.Start(t, mounttest.Options{Config: "[mount]\n" + pm.toml + "\n", Args: []string{"--clamd", clamd.Address(), "--timeout", "20s"}})
		pm.check(t, m)
		posixSuiteOn(t, m, native)
	})
}

// posixSuiteOn runs posixtest on m and compares each check's outcome with
// native's.
func posixSuiteOn(t *testing.T, m *mounttest.Mount, native map[string]posixOutcome) {
	var mount map[string]posixOutcome
	m.Within(t, 5*time.Minute, "posixtest on the mount", func() { mount = posixChild(t, m.Target) })
	for _, name := range posixNames() {
		t.Run(name, func(t *testing.T) {
			n, g := native[name], mount[name]
			switch {
			case n.action == "" || g.action == "":
				t.Fatalf("no outcome: natively %q, on the mount %q", n.action, g.action)
			case g.action == "pass" && posixMountSkips[name] != "":
				t.Errorf("passes on the mount now: the known limit is gone, remove it from posixMountSkips")
			case g.action == "pass":
				if n.action != "pass" {
					t.Logf("passes on the mount; natively: %s %s", n.action, n.msg)
				}
			case g.action == "fail" && n.action == "fail":
				testenv.KnownLimit(t, "posixtest %s fails on the native filesystem too: %s (on the mount: %s)", name, n.msg, g.msg)
			case g.action == "skip" && n.action == "skip" && g.msg == n.msg:
				testenv.KnownLimit(t, "posixtest %s skips itself natively and on the mount alike: %s", name, g.msg)
			case g.action == "skip" && n.action == "pass" && posixMountSkips[name] != "" && strings.Contains(g.msg, posixMountSkips[name]):
				testenv.KnownLimit(t, "posixtest %s skips itself on the mount only: %s", name, g.msg)
			default:
				t.Errorf("on the mount: %s %s; natively: %s %s", g.action, g.msg, n.action, n.msg)
			}
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

// posixOutcome is how one posixtest check ended: pass, fail or skip,
// and why: its first message when it failed, its last one otherwise.
type posixOutcome struct{ action, msg string }

// posixChild runs every posixtest check in its own directory under dir,
// in a child test process, and returns how each ended.
func posixChild(t *testing.T, dir string) map[string]posixOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "test2json", "-t", os.Args[0],
		"-test.run", "^TestPosixSuite$", "-test.v=test2json", "-test.count=1")
	cmd.Env = append(os.Environ(), "CLAMFUSE_POSIX_DIR="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("posixtest in %s: still running after 4 minutes", dir)
	}
	got := map[string]posixOutcome{}
	first, last := map[string]string{}, map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e struct{ Action, Test, Output string }
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		name, ok := strings.CutPrefix(e.Test, "TestPosixSuite/")
		if !ok {
			continue
		}
		switch e.Action {
		case "output":
			if l := strings.TrimSpace(e.Output); l != "" && !strings.HasPrefix(l, "=== ") && !strings.HasPrefix(l, "--- ") {
				if _, msg, ok := strings.Cut(l, ".go:"); ok && strings.Contains(msg, ": ") {
					_, l, _ = strings.Cut(msg, ": ")
				}
				if first[name] == "" {
					first[name] = l
				}
				last[name] = l
			}
		case "pass", "skip":
			got[name] = posixOutcome{e.Action, last[name]}
		case "fail":
			got[name] = posixOutcome{e.Action, first[name]}
		}
	}
	if len(got) != len(posixtest.All) {
		t.Fatalf("posixtest in %s: %d outcomes of %d checks (%v)\n%s\n%s", dir, len(got), len(posixtest.All), err, out, stderr.Bytes())
	}
	return got
}
