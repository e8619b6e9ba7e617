// Package test holds clamfuse's end-to-end tests: the built binary on a
// real FUSE mount, in front of a real clamd started by the test itself.
package test

import (
	"flag"
	"os"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/mounttest"
)

func TestMain(m *testing.M) {
	flag.Parse()
	// Abort every FUSE connection of ours before go test's own timeout
	// kills this process and leaves callers of a hung mount in D state.
	deadline := time.Now().Add(10 * time.Minute)
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			deadline = time.Now().Add(d)
		}
	}
	// Every clamfuse the tests start (mounttest, the fstab forms) keeps
	// its verdicts in its own state file, named for its mountpoint, in
	// $STATE_DIRECTORY ("auto", as systemd's StateDirectory= sets it):
	// here, not in the machine's /var/lib/clamfuse.
	state, err := os.MkdirTemp("", "clamfuse-state")
	if err != nil {
		panic(err)
	}
	os.Setenv("STATE_DIRECTORY", state)
	stop := mounttest.Watchdog(deadline)
	code := m.Run()
	stop()
	mounttest.AbortAll()
	os.RemoveAll(state)
	os.Exit(code)
}
