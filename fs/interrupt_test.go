package fs

import (
	"os"
	"testing"
)

func TestProcSignals(t *testing.T) {
	status := "Name:\tcat\nSigQ:\t1/94772\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000004000\n" +
		"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000004\nSigCgt:\tfffffffe7ffbfeff\nCapInh:\t0000000000000000\n"
	got := procSignals([]byte(status))
	want := map[string]uint64{"SigPnd": 0x100, "ShdPnd": 0x4000, "SigBlk": 0, "SigIgn": 4, "SigCgt": 0xfffffffe7ffbfeff}
	if len(got) != len(want) {
		t.Fatalf("procSignals = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("procSignals[%s] = %#x, want %#x", k, got[k], v)
		}
	}
}

func TestDying(t *testing.T) {
	if dying(uint32(os.Getpid())) {
		t.Errorf("dying(self) = true; this process has no fatal signal pending")
	}
	if !dying(1 << 30) {
		t.Errorf("dying(no such thread) = false, want true")
	}
}

func TestFatalPending(t *testing.T) {
	const (
		kill = 1 << 8  // SIGKILL
		term = 1 << 14 // SIGTERM
		urg  = 1 << 22 // SIGURG
		chld = 1 << 16 // SIGCHLD
	)
	for _, tc := range []struct {
		name string
		st   map[string]uint64
		want bool
	}{
		{"nothing pending", map[string]uint64{}, false},
		{"SIGKILL in the thread", map[string]uint64{"SigPnd": kill, "SigCgt": ^uint64(0)}, true},
		{"SIGKILL shared", map[string]uint64{"ShdPnd": kill}, true},
		{"SIGTERM not caught", map[string]uint64{"ShdPnd": term}, true},
		{"SIGTERM caught", map[string]uint64{"ShdPnd": term, "SigCgt": term}, false},
		{"SIGTERM ignored", map[string]uint64{"ShdPnd": term, "SigIgn": term}, false},
		{"SIGTERM blocked", map[string]uint64{"SigPnd": term, "SigBlk": term}, false},
		{"SIGURG not caught", map[string]uint64{"SigPnd": urg}, false},
		{"SIGCHLD not caught", map[string]uint64{"ShdPnd": chld}, false},
	} {
		if got := fatalPending(tc.st); got != tc.want {
			t.Errorf("%s: fatalPending = %v, want %v", tc.name, got, tc.want)
		}
	}
}
