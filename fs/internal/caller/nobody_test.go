package caller

import (
	"bytes"
	"os"
	"strconv"
	"testing"

	"github.com/clamfuse/clamfuse/test/testenv"

	"golang.org/x/sys/unix"
)

// effectiveCaps returns the calling thread's CapEff, from
// /proc/thread-self/status.
func effectiveCaps(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("CapEff:")); ok {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no CapEff in /proc/thread-self/status")
	return 0
}

// TestAsNobody: inside AsNobody the thread is nobody, in no group, with
// CAP_SYS_ADMIN alone of its capabilities (so that the kernel records
// credentials that lend a passthrough write nothing of root's); the
// caller's threads stay clamfuse, capabilities included, and a panic in
// fn comes back as an error.
func TestAsNobody(t *testing.T) {
	requireRoot(t)
	beforeUID, beforeGID, beforeGroups := threadStatus(t)
	beforeCaps := effectiveCaps(t)
	if beforeCaps&(1<<unix.CAP_SYS_ADMIN) == 0 {
		testenv.Skip(t, "no CAP_SYS_ADMIN to keep")
	}
	err := AsNobody(func() error {
		uid, gid, groups := threadStatus(t)
		if uid != "65534" || gid != "65534" || groups != "" {
			t.Errorf("inside: fsuid %s fsgid %s groups %q; want 65534 65534 none", uid, gid, groups)
		}
		if c := effectiveCaps(t); c != 1<<unix.CAP_SYS_ADMIN {
			t.Errorf("inside: effective capabilities %#x; want CAP_SYS_ADMIN alone (%#x)", c, uint64(1)<<unix.CAP_SYS_ADMIN)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := AsNobody(func() error { panic("in fn") }); err == nil {
		t.Error("a panic as nobody returned no error")
	}
	if err := AsNobody(func() error { return nil }); err != nil {
		t.Errorf("after a panic: %v", err)
	}
	for range 20 { // whatever thread the goroutine lands on
		uid, gid, groups := threadStatus(t)
		if uid != beforeUID || gid != beforeGID || groups != beforeGroups || effectiveCaps(t) != beforeCaps {
			t.Fatalf("after: fsuid %s fsgid %s groups %q caps %#x; want %s %s %q %#x",
				uid, gid, groups, effectiveCaps(t), beforeUID, beforeGID, beforeGroups, beforeCaps)
		}
	}
}
