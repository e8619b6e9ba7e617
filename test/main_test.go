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
	stop := mounttest.Watchdog(deadline)
	code := m.Run()
	stop()
	mounttest.AbortAll()
	os.Exit(code)
}
