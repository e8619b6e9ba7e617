package main

import (
	"testing"

	"github.com/clamfuse/clamfuse/config"
)

func TestStatePath(t *testing.T) {
	tests := []struct {
		setting, target, stateDir, want string
	}{
		{"auto", "/srv/incoming", "", "/var/lib/clamfuse/srv-incoming.state"},
		{"auto", "/srv/in coming/", "", `/var/lib/clamfuse/srv-in\x20coming.state`},
		{"auto", "/mnt/.hidden/a-b", "", `/var/lib/clamfuse/mnt-.hidden-a\x2db.state`},
		{"auto", "/", "", "/var/lib/clamfuse/-.state"},
		{"auto", "/srv/share", "/var/lib/clamfuse:/var/lib/other", "/var/lib/clamfuse/srv-share.state"},
		{"auto", "/srv/share", "/run/state/clamfuse", "/run/state/clamfuse/srv-share.state"},
		{"auto", "/srv/share", "relative", "/var/lib/clamfuse/srv-share.state"},
		{"/etc/x.state", "/srv/share", "/run/state", "/etc/x.state"},
		{"", "/srv/share", "", ""},
	}
	for _, tt := range tests {
		t.Setenv("STATE_DIRECTORY", tt.stateDir)
		if got := statePath(tt.setting, tt.target); got != tt.want {
			t.Errorf("statePath(%q, %q) with STATE_DIRECTORY=%q = %q; want %q", tt.setting, tt.target, tt.stateDir, got, tt.want)
		}
	}
}

// The rollout keys are all reloadable but cache.state_file, and an empty
// list is no change from none.
func TestChangedKeysRollout(t *testing.T) {
	a, b := config.Default(), config.Default()
	b.Scan.ExcludeUIDs, b.Scan.AllowSHA256 = nil, nil
	if got := changedKeys(a, b); len(got) != 0 {
		t.Errorf("empty lists against none: changed %v", got)
	}
	b.Scan.Mode, b.Scan.ExcludeUIDs, b.Log.RepeatInterval, b.Cache.StateFile = "audit", []int64{34}, 0, ""
	got := changedKeys(a, b)
	want := []string{"scan.mode", "scan.exclude_uids", "cache.state_file", "log.repeat_interval"}
	if len(got) != len(want) {
		t.Fatalf("changed %v; want %v", got, want)
	}
	for i, k := range want {
		if got[i] != k || notReloadable[k] != (k == "cache.state_file") {
			t.Errorf("changed %v; want %v, only cache.state_file not reloadable", got, want)
		}
	}
}
