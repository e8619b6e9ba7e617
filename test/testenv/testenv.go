// Package testenv is what every test package of clamfuse shares about its
// environment: whether it runs in CI, the one way to skip a test, and a
// log buffer safe for concurrent writers. It imports nothing but the
// standard library, so that any test (cache/, clamav/, config/ included)
// may use it without pulling in FUSE.
package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// CI reports whether the tests run in CI: the environment variable CI is
// exactly "true", as .ci/run (and GitHub Actions, GitLab CI) set it. Any
// other value, "false" or "1" included, is not CI.
func CI() bool { return os.Getenv("CI") == "true" }

// SkipPrefix starts the message of every skip made by Skip, and
// LimitPrefix the line KnownLimit logs; test/cmd/testreport, which
// summarises `make test`, lists both.
const (
	SkipPrefix  = "SKIP: "
	LimitPrefix = "KNOWN LIMIT: "
)

// Skip skips t because the machine lacks what it needs, saying why: make
// test prints every skip with its reason (test/cmd/testreport). With
// CI=true it fails t instead: CI installs everything the tests need, so a
// test that cannot run there is a test lost, not a test passed.
//
// Skip is for what the environment lacks (a tool, root, a kernel
// feature), never for behaviour that is wrong or missing: a test pins
// that (see KnownLimit) or fails.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (CI=true: a skip is a failure; .ci/run installs what the tests need)", why)
	}
	t.Skip(SkipPrefix + why)
}

// KnownLimit records, in t's log, a documented difference from the native
// behaviour that t has just pinned: t checked that the limit is exactly
// as documented (and fails when it changes), so t passes. make test lists
// the limits after the skips.
func KnownLimit(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Log(LimitPrefix + fmt.Sprintf(format, args...))
}

// SyncBuffer is a bytes.Buffer that goroutines (and a child process's
// stdout and stderr) may write to at once, for logs that tests read while
// they are written.
type SyncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the lines written so far that contain substr (all of
// them for "").
func (b *SyncBuffer) Lines(substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}
