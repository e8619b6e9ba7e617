package test

import (
	"strings"
	"testing"

	"github.com/clamfuse/clamfuse/test/testenv"

	"github.com/clamfuse/clamfuse/test/mounttest"
)

// ptMode is one of the two ways clamfuse serves the opens the gate
// allowed: FUSE passthrough (the kernel reads and writes the judged file
// itself) or clamfuse's own READ and WRITE (the fallback, as on a kernel
// without passthrough). The tests that matter for opens run in both.
type ptMode struct {
	name string
	toml string // the [mount] line
	on   bool
}

var ptModes = []ptMode{
	{"passthrough", `passthrough = "auto"`, true},
	{"served", `passthrough = "off"`, false},
}

// inPtModes runs fn as a subtest in each mode.
func inPtModes(t *testing.T, fn func(t *testing.T, pm ptMode)) {
	t.Helper()
	for _, pm := range ptModes {
		t.Run(pm.name, func(t *testing.T) { fn(t, pm) })
	}
}

// check makes sure m serves opens as pm says: passthrough granted by the
// kernel when on (else the subtest is skipped, loudly, and fails in CI),
// never when off.
func (pm ptMode) check(t *testing.T, m *mounttest.Mount) {
	t.Helper()
	lines := m.WaitLogLines(t, logBound, "msg=mounted")
	granted := strings.Contains(lines[0], "passthrough=true")
	switch {
	case pm.on && !granted:
		msg := "the kernel did not grant FUSE passthrough (Linux 6.9+, CONFIG_FUSE_PASSTHROUGH): " + lines[0]
		testenv.Skip(t, "passthrough mode: %s", msg)
	case !pm.on && granted:
		t.Fatalf("passthrough off, yet the mount says %s", lines[0])
	}
}
