package testenv

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGuardDetachesTracked: the guard, another process, detaches the
// mounts still tracked once its time is up, whatever this process does
// meanwhile (here: nothing; in a stuck test binary, nothing either), and
// the mounts untracked before that are left alone. (A tmpfs stands in
// for a FUSE mount: there is no connection to abort.)
func TestGuardDetachesTracked(t *testing.T) {
	if os.Geteuid() != 0 {
		Skip(t, "mounting needs root")
	}
	kept, left := t.TempDir(), t.TempDir()
	for _, d := range []string{kept, left} {
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(d, syscall.MNT_DETACH) })
	}
	untrackKept := TrackMount(kept)
	untrackLeft := TrackMount(left)
	stop := startGuard(time.Second)
	defer stop()
	untrackKept()
	defer untrackLeft()
	for deadline := time.Now().Add(30 * time.Second); mounted(t, left); {
		if time.Now().After(deadline) {
			t.Fatal("the guard did not detach the tracked mount within 30 s of its time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !mounted(t, kept) {
		t.Error("the guard detached a mount no longer tracked")
	}
}

// mounted reports whether dir is a mountpoint in this mount namespace.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
