package fuse

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"
)

func TestRequestInitFlagsOption(t *testing.T) {
	tests := []struct {
		name  string
		flags InitFlags
		ok    bool
	}{
		{"POSIX ACL", InitPosixACL, true},
		{"every requestable flag", RequestableInitFlags, true},
		{"none", 0, true},
		{"MAX_PAGES", InitMaxPages, true},
		{"READDIRPLUS", InitDoReaddirplus | InitReaddirplusAuto | InitPosixACL, true},
		{"splice needs splice", InitSpliceRead | InitPosixACL, false},
		{"INIT_EXT needs flags2", InitInitExt, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := mountConfig{initFlags: InitAsyncDIO}
			err := RequestInitFlags(tt.flags)(&conf)
			if tt.ok {
				if err != nil {
					t.Fatalf("RequestInitFlags(%v): %v", tt.flags, err)
				}
				if want := InitAsyncDIO | tt.flags; conf.initFlags != want {
					t.Errorf("initFlags = %v, want %v", conf.initFlags, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("RequestInitFlags(%v) accepted", tt.flags)
			}
			if conf.initFlags != InitAsyncDIO {
				t.Errorf("initFlags = %v after an error, want them unchanged", conf.initFlags)
			}
		})
	}
}

// TestRequestInitFlagsGranted mounts with InitPosixACL requested and checks
// that the kernel grants it (every Linux since 4.9 offers it), and that a
// flag it offers but nobody asked for (READDIRPLUS) is not granted.
func TestRequestInitFlagsGranted(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	c, err := Mount(dir, RequestInitFlags(InitPosixACL), FSName("clamfuse-initflags-test"))
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	defer c.Close()

	// Answer whatever the kernel (or anyone looking at a new mount) asks
	// until the unmount ends the connection.
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			req, err := c.ReadRequest()
			if err != nil {
				return
			}
			switch r := req.(type) {
			case *ForgetRequest:
				r.Respond()
			case *BatchForgetRequest:
				r.Respond()
			default:
				req.RespondError(Errno(syscall.ENOSYS))
			}
		}
	}()

	got := c.Features()
	unmounted := make(chan error, 1)
	go func() { unmounted <- Unmount(dir) }()
	select {
	case err := <-unmounted:
		if err != nil {
			t.Errorf("Unmount: %v", err)
		}
	case <-time.After(time.Minute):
		abort(t, dir)
		t.Fatal("unmount hung; the connection was aborted")
	}
	select {
	case <-served:
	case <-time.After(time.Minute):
		abort(t, dir)
		t.Fatal("the connection did not end after the unmount; it was aborted")
	}

	if got&InitPosixACL == 0 {
		t.Errorf("Features() = %v: InitPosixACL was asked for and not granted", got)
	}
	if got&InitDoReaddirplus != 0 {
		t.Errorf("Features() = %v: InitDoReaddirplus was granted without being asked for", got)
	}
}

// requireFUSE skips the test, loudly, when FUSE mounts cannot run here,
// and fails it instead when CI is set.
func requireFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse: " + err.Error()
	} else if _, err := exec.LookPath("fusermount3"); err != nil {
		why = "fusermount3 not installed (Debian package fuse3)"
	} else if os.Geteuid() != 0 {
		why = "mounted tests run as root"
	}
	if why == "" {
		return
	}
	testenv.Skip(t, "mounted test: %s", why)
}

// abort aborts the FUSE connection mounted on dir through fusectl, found
// in /proc/self/mountinfo (not by stat, which would ask the mount itself).
func abort(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Logf("abort: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[4] != dir {
			continue
		}
		_, minor, ok := strings.Cut(fields[2], ":")
		if !ok {
			continue
		}
		err := os.WriteFile(filepath.Join("/sys/fs/fuse/connections", minor, "abort"), []byte("1"), 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Logf("abort: %v", err)
		}
		_ = exec.Command("umount", "-l", dir).Run()
		return
	}
}
