package fs

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"

	"golang.org/x/sys/unix"
)

// The timestamp granularity found on the filesystem of the test's
// temporary directory: fine on the filesystems tests run on (the
// one-second case is test/freshness_test.go's, on a loop-mounted ext4),
// and the probe leaves nothing behind.
func TestProbeGranularity(t *testing.T) {
	dir := t.TempDir()
	before, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	gran, how := probeGranularity(fd)
	t.Logf("granularity %v, found by %s", gran, how)
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		t.Fatal(err)
	}
	switch {
	case remoteFS[int64(sfs.Type)]:
		if gran != unknownGranularity {
			t.Errorf("granularity %v on a network filesystem; want %v", gran, unknownGranularity)
		}
	case strings.HasPrefix(how, "no O_TMPFILE"):
		t.Logf("no O_TMPFILE here: %s", how)
	case gran <= 0 || gran >= 100*time.Millisecond:
		t.Errorf("granularity %v (%s) on a local filesystem with O_TMPFILE; want under 100ms", gran, how)
	}
	after, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st2 unix.Stat_t
	if err := unix.Stat(dir, &st2); err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || st2.Mtim != st.Mtim || st2.Ctim != st.Ctim {
		t.Errorf("the probe changed the directory: %d entries (were %d), times %v %v (were %v %v)",
			len(after), len(before), st2.Mtim, st2.Ctim, st.Mtim, st.Ctim)
	}
}

// A thread's process is its thread group; an unknown thread has none.
func TestTgidOf(t *testing.T) {
	pid := int32(os.Getpid())
	if got := tgidOf(uint32(pid)); got != pid {
		t.Errorf("tgidOf(main thread) = %d; want %d", got, pid)
	}
	done := make(chan int32)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		done <- tgidOf(uint32(unix.Gettid()))
	}()
	if got := <-done; got != pid {
		t.Errorf("tgidOf(another thread) = %d; want %d", got, pid)
	}
	for _, tid := range []uint32{0, 1 << 30} {
		if got := tgidOf(tid); got != -1 {
			t.Errorf("tgidOf(%d) = %d; want -1", tid, got)
		}
	}
	if sameProcess(-1, -1) || sameProcess(0, 0) || !sameProcess(pid, pid) {
		t.Error("sameProcess: an unknown process is the same as another")
	}
}

// OutsideWriters warns only about a backing directory other users can
// reach and write outside the mount.
func TestOutsideWriters(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root to give files to other users")
	}
	open, err := os.MkdirTemp("", "clamfuse-outside")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(open) })
	mustChmod(t, open, 0o755)
	closed := filepath.Join(open, "closed")
	tests := []struct {
		name  string
		setup func(src string)
		src   string
		dst   string // "" for elsewhere
		want  string // substring of the reason; "" for none
	}{
		{"root's, read-only for others", func(src string) { write(t, filepath.Join(src, "f"), 0o644, 0) }, filepath.Join(open, "a"), "", ""},
		{"a file of another user", func(src string) { write(t, filepath.Join(src, "f"), 0o644, 12345) }, filepath.Join(open, "b"), "", "belongs to uid 12345"},
		{"a world-writable directory", func(src string) {
			mustMkdir(t, filepath.Join(src, "drop"), 0o777)
		}, filepath.Join(open, "c"), "", "writable by every user"},
		{"deep down", func(src string) {
			mustMkdir(t, filepath.Join(src, "x"), 0o755)
			write(t, filepath.Join(src, "x", "f"), 0o664, 0)
			if err := os.Chown(filepath.Join(src, "x", "f"), 0, 12345); err != nil {
				t.Fatal(err)
			}
		}, filepath.Join(open, "d"), "", "writable by group 12345"},
		{"in place", func(src string) { write(t, filepath.Join(src, "f"), 0o644, 12345) }, filepath.Join(open, "e"), "same", ""},
		{"behind a closed directory", func(src string) { write(t, filepath.Join(src, "f"), 0o644, 12345) }, filepath.Join(closed, "f"), "", ""},
	}
	mustMkdir(t, closed, 0o700)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustMkdir(t, tt.src, 0o755)
			tt.setup(tt.src)
			dst := filepath.Join(open, "elsewhere")
			if tt.dst == "same" {
				dst = tt.src
			}
			got := OutsideWriters(tt.src, dst)
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("OutsideWriters = %q; want %q", got, tt.want)
			}
		})
	}
}

func write(t *testing.T, p string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), mode); err != nil {
		t.Fatal(err)
	}
	mustChmod(t, p, mode)
	if err := os.Chown(p, uid, 0); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	mustChmod(t, p, mode)
}

func mustChmod(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}
