package testenv

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestCI(t *testing.T) {
	for _, tc := range []struct {
		value string
		set   bool
		want  bool
	}{
		{"true", true, true},
		{"", false, false},
		{"", true, false},
		{"false", true, false},
		{"1", true, false},
		{"TRUE", true, false},
		{"yes", true, false},
	} {
		if tc.set {
			t.Setenv("CI", tc.value)
		} else {
			t.Setenv("CI", "")
			os.Unsetenv("CI")
		}
		if got := CI(); got != tc.want {
			t.Errorf("CI=%q (set %v): CI() = %v; want %v", tc.value, tc.set, got, tc.want)
		}
	}
}

// TestSkip runs itself as a child test process with CI set to several
// values: Skip skips, saying why, unless CI is exactly "true", where it
// fails. In the child (CLAMFUSE_TESTENV_CHILD set) it is the test that
// calls Skip.
func TestSkip(t *testing.T) {
	if os.Getenv("CLAMFUSE_TESTENV_CHILD") != "" {
		Skip(t, "the reason %d", 42)
		t.Error("Skip returned")
		return
	}
	for _, tc := range []struct {
		ci   string
		want string // in the child's -v output
	}{
		{"", "--- SKIP: TestSkip"},
		{"false", "--- SKIP: TestSkip"},
		{"1", "--- SKIP: TestSkip"},
		{"true", "--- FAIL: TestSkip"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestSkip$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "CLAMFUSE_TESTENV_CHILD=1", "CI="+tc.ci)
		out, err := cmd.CombinedOutput()
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "the reason 42") {
			t.Errorf("CI=%q: child output lacks %q and the reason:\n%s", tc.ci, tc.want, out)
		}
		if failed := err != nil; failed != (tc.ci == "true") {
			t.Errorf("CI=%q: child exit %v; want a failure only with CI=true", tc.ci, err)
		}
		if tc.ci != "true" && !strings.Contains(string(out), SkipPrefix+"the reason 42") {
			t.Errorf("CI=%q: the skip message lacks %q:\n%s", tc.ci, SkipPrefix, out)
		}
	}
}

func TestSyncBufferLines(t *testing.T) {
	var b SyncBuffer
	b.Write([]byte("one alpha\ntwo beta\nthree alpha"))
	if got := b.Lines("alpha"); len(got) != 2 || got[0] != "one alpha" || got[1] != "three alpha" {
		t.Errorf("Lines(alpha) = %q", got)
	}
	if got := b.Lines(""); len(got) != 3 {
		t.Errorf("Lines(\"\") = %q; want 3 lines", got)
	}
}

// TestOneWayToSkip reads every Go file of the module: only this package
// looks at CI, and no test skips but through Skip (or, for a difference
// it does not compare, a named quirk in test/backing_test.go), so that no
// test can skip silently in CI again.
func TestOneWayToSkip(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found from %s: %v", root, err)
	}
	skip := regexp.MustCompile(`\bt\.Skip(f|Now)?\(`)
	allowedSkip := map[string]bool{"test/backing_test.go": true}
	var files int
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "test/testenv/testenv.go" || rel == "test/testenv/testenv_test.go" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte(`Getenv("CI")`)) {
			t.Errorf("%s reads CI itself: use testenv.Skip or testenv.CI", rel)
		}
		if !allowedSkip[rel] && skip.Match(b) {
			t.Errorf("%s skips with t.Skip: use testenv.Skip, which says why and fails in CI", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("read only %d Go files under %s", files, root)
	}
}
