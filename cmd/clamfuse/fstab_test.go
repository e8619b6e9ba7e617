package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFstabParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    []string // mountArgs
		fake    bool
		wantErr string
	}{
		{
			name: "mount.fuse3 form",
			args: []string{"/srv/in", "/mnt/in", "-o", "config=/etc/clamfuse/in.toml,allow_other,_netdev"},
			want: []string{"--config", "/etc/clamfuse/in.toml", "--allow-other", "--", "/srv/in", "/mnt/in"},
		},
		{
			name: "mount(8) helper form with rw first and -t",
			args: []string{"/srv/in", "/mnt/in", "-o", "rw,config=/c.toml,nofail", "-t", "fuse.clamfuse"},
			want: []string{"--config", "/c.toml", "--", "/srv/in", "/mnt/in"},
		},
		{
			name: "ro and clamd",
			args: []string{"/s", "/m", "-o", "ro,clamd=tcp://127.0.0.1:3310"},
			want: []string{"--read-only", "--clamd", "tcp://127.0.0.1:3310", "--", "/s", "/m"},
		},
		{
			name: "attached -o, several -o, combined flags",
			args: []string{"-nv", "/s", "-oallow_other", "/m", "-o", "config=/c.toml"},
			want: []string{"--allow-other", "--config", "/c.toml", "--", "/s", "/m"},
		},
		{
			name: "generic options mount.fuse3 and fstab pass on",
			args: []string{"/s", "/m", "-o", "defaults,suid,dev,nosuid,nodev,noatime,relatime,auto,noauto,user,users,nouser,exec,comment=x,x-systemd.automount,default_permissions"},
			want: []string{"--", "/s", "/m"},
		},
		{
			name: "no options",
			args: []string{"/s", "/m"},
			want: []string{"--", "/s", "/m"},
		},
		{
			name: "source that looks like a flag after --",
			args: []string{"-o", "ro", "--", "-s", "/m"},
			want: []string{"--read-only", "--", "-s", "/m"},
		},
		{
			name: "fake",
			args: []string{"/s", "/m", "-f", "-o", "config=/c.toml"},
			want: []string{"--config", "/c.toml", "--", "/s", "/m"},
			fake: true,
		},
		{
			name: "sloppy accepts unknown options",
			args: []string{"/s", "/m", "-s", "-o", "frobnicate,level=3"},
			want: []string{"--", "/s", "/m"},
		},
		{name: "unknown option", args: []string{"/s", "/m", "-o", "frobnicate"}, wantErr: `unknown mount option "frobnicate"`},
		{name: "noexec cannot be honoured", args: []string{"/s", "/m", "-o", "noexec"}, wantErr: "noexec is not supported"},
		{name: "config without value", args: []string{"/s", "/m", "-o", "config"}, wantErr: "config needs a value"},
		{name: "one path", args: []string{"/s", "-o", "ro"}, wantErr: "want SOURCE and MOUNTPOINT, got 1"},
		{name: "three paths", args: []string{"/s", "/m", "/x"}, wantErr: "got 3"},
		{name: "-o at the end", args: []string{"/s", "/m", "-o"}, wantErr: "-o needs an argument"},
		{name: "other type", args: []string{"/s", "/m", "-t", "fuse.sshfs"}, wantErr: `type "fuse.sshfs"`},
		{name: "namespace", args: []string{"/s", "/m", "-N", "1"}, wantErr: "-N"},
		{name: "unknown flag", args: []string{"/s", "/m", "-x"}, wantErr: "unknown flag -x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFstabArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFstabArgs(%q) error = %v; want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFstabArgs(%q): %v", tt.args, err)
			}
			if !slices.Equal(c.mountArgs, tt.want) || c.fake != tt.fake {
				t.Errorf("parseFstabArgs(%q) = %q, fake %v; want %q, fake %v", tt.args, c.mountArgs, c.fake, tt.want, tt.fake)
			}
		})
	}
}

// The arguments parseFstabArgs produces must be ones "clamfuse mount"
// accepts, with the fstab paths winning over the config's.
func TestFstabArgsReachMountFlags(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "in.toml")
	cfg := "[mount]\nsource = \"/srv/other\"\ntarget = \"/mnt/other\"\nread_only = true\n[clamd]\naddress = \"/run/x.sock\"\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := parseFstabArgs([]string{"/srv/in", "/mnt/in", "-o", "rw,allow_other,clamd=tcp://127.0.0.1:3310,config=" + cfgPath})
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseMountFlags(c.mountArgs, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Mount.Source != "/srv/in" || got.Mount.Target != "/mnt/in" {
		t.Errorf("source, target = %q, %q; want the fstab line's", got.Mount.Source, got.Mount.Target)
	}
	if !got.Mount.ReadOnly {
		t.Errorf("read_only = false; rw (which mount(8) always passes) must not override read_only = true")
	}
	if !got.Mount.AllowOther || got.Clamd.Address.String() != "tcp://127.0.0.1:3310" {
		t.Errorf("allow_other = %v, clamd = %q; want true, the option's", got.Mount.AllowOther, got.Clamd.Address)
	}
}

func TestFstabDispatch(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"/srv/in", "/mnt/in", "-o", "ro"}, true},
		{[]string{"./src", "mnt"}, true},
		{[]string{"mnt", "x"}, false}, // a mistyped command, not a path
		{[]string{"/srv/in"}, false},
		{[]string{"-o", "ro"}, false},
		{[]string{"", "x"}, false},
	} {
		if got := isFstabForm(tt.args); got != tt.want {
			t.Errorf("isFstabForm(%q) = %v; want %v", tt.args, got, tt.want)
		}
	}
	for _, tt := range []struct {
		argv0 string
		want  bool
	}{
		{"/sbin/mount.fuse.clamfuse", true},
		{"mount.fuse.clamfuse", true},
		{"/usr/bin/clamfuse", false},
		{"clamfuse", false},
	} {
		if got := isMountHelper(tt.argv0); got != tt.want {
			t.Errorf("isMountHelper(%q) = %v; want %v", tt.argv0, got, tt.want)
		}
	}
}

func TestFstabRunErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown option", []string{dir, dir, "-o", "bogus"}, exitUsage, `unknown mount option "bogus"`},
		{"fake with a missing config", []string{dir, dir, "-f", "-o", "config=" + dir + "/none.toml"}, exitUsage, "none.toml"},
		{"fake ok", []string{dir, dir, "-f"}, exitOK, ""},
		{"help", []string{dir, dir, "-h"}, exitOK, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
			}
		})
	}
}

func TestFstabChildEnv(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "NOTIFY_SOCKET=/run/x", detachEnv + "=old", "HOME=/root"})
	want := []string{"PATH=/bin", "HOME=/root", detachEnv + "=1"}
	if !slices.Equal(got, want) {
		t.Errorf("childEnv = %q; want %q", got, want)
	}
}

// The status pipe carries errors until ready, then readyMsg, and after
// that writes go to the log instead.
func TestFstabStatusPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var after bytes.Buffer
	p := &statusPipe{f: w, after: &after}
	p.Write([]byte("clamfuse: warning: x\n"))
	p.ready()
	p.ready() // idempotent
	p.Write([]byte("clamfuse: later\n"))
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := "clamfuse: warning: x\n" + readyMsg; string(got) != want {
		t.Errorf("pipe got %q; want %q", got, want)
	}
	if after.String() != "clamfuse: later\n" {
		t.Errorf("after ready, log got %q", after.String())
	}
}
