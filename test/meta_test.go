package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestSymlinkCacheReplaced (issue #12): the kernel caches symlink targets
// (FUSE_CACHE_SYMLINKS); a symlink replaced in the backing directory
// shows its new target through the mount within watchBound: removed and
// made again (ext4 and tmpfs give it the inode number just freed), and
// renamed over. Through the mount, a rename over it shows at once.
func TestSymlinkCacheReplaced(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", clamd.Address(), "--timeout", "30s"}})
	readlink := func(name string) string {
		var s string
		var err error
		m.Within(t, time.Minute, "readlink "+name, func() { s, err = os.Readlink(m.Path(name)) })
		if err != nil {
			return errnoName(err)
		}
		return s
	}
	mustDo(t, os.Symlink("first", m.Backing("l")))
	for range 3 { // cached now, if ever
		if got := readlink("l"); got != "first" {
			t.Fatalf("readlink l: %q, want first", got)
		}
	}
	var st unix.Stat_t
	mustDo(t, unix.Lstat(m.Backing("l"), &st))
	old := st.Ino
	mustDo(t, os.Remove(m.Backing("l")))
	mustDo(t, os.Symlink("second", m.Backing("l")))
	mustDo(t, unix.Lstat(m.Backing("l"), &st))
	t.Logf("made again with the same inode number: %v", st.Ino == old)
	eventually(t, watchBound, "the symlink made again shows its target", func() bool { return readlink("l") == "second" })

	mustDo(t, os.Symlink("third", m.Backing("l.new")))
	mustDo(t, os.Rename(m.Backing("l.new"), m.Backing("l")))
	eventually(t, watchBound, "the symlink renamed over shows its target", func() bool { return readlink("l") == "third" })

	var err error
	m.Within(t, time.Minute, "symlink and rename through the mount", func() {
		if err = os.Symlink("fourth", m.Path("l.new")); err == nil {
			err = os.Rename(m.Path("l.new"), m.Path("l"))
		}
	})
	mustDo(t, err)
	if got := readlink("l"); got != "fourth" {
		t.Errorf("renamed over through the mount: %q, want fourth", got)
	}
	// A path walk through the link follows the new target too.
	mustDo(t, os.Mkdir(m.Backing("fourth"), 0o755))
	mustDo(t, os.WriteFile(m.Backing("fourth/f"), []byte("4"), 0o644))
	if b, err := os.ReadFile(m.Path("l/f")); err != nil || string(b) != "4" {
		t.Errorf("read l/f: %q, %v", b, err)
	}
}

// TestReaddirPlusWatched (issue #12): names and attributes the kernel got
// from READDIRPLUS (mount.readdirplus "on" and "auto") are trusted for
// long as looked-up ones are, so their directories must be watched as
// looked-up ones are: a change made directly in the backing directory,
// in a subdirectory known only from a listing, shows within watchBound.
func TestReaddirPlusWatched(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	for _, mode := range []string{"on", "auto"} {
		t.Run(mode, func(t *testing.T) {
			m := mounttest.Start(t, mounttest.Options{
				Args:   []string{"--clamd", clamd.Address(), "--timeout", "30s"},
				Config: fmt.Sprintf("[mount]\nreaddirplus = %q\n", mode),
			})
			mustDo(t, os.MkdirAll(m.Backing("d/sub"), 0o755))
			mustDo(t, os.WriteFile(m.Backing("d/x"), []byte("x"), 0o644))
			mustDo(t, os.WriteFile(m.Backing("d/sub/y"), []byte("y"), 0o644))
			var out []byte
			var err error
			m.Within(t, time.Minute, "ls -lR", func() { out, err = exec.Command("ls", "-lR", m.Target).CombinedOutput() })
			if err != nil {
				t.Fatalf("ls -lR: %v\n%s", err, out)
			}
			lstat := func(name string) (unix.Stat_t, error) {
				var st unix.Stat_t
				var err error
				m.Within(t, time.Minute, "lstat "+name, func() { err = unix.Lstat(m.Path(name), &st) })
				return st, err
			}
			mustDo(t, os.Chmod(m.Backing("d/sub/y"), 0o600))
			mustDo(t, os.Rename(m.Backing("d/x"), m.Backing("d/x2")))
			eventually(t, watchBound, "chmod of d/sub/y shows", func() bool {
				st, err := lstat("d/sub/y")
				return err == nil && st.Mode&0o777 == 0o600
			})
			eventually(t, watchBound, "rename of d/x shows", func() bool {
				_, err := lstat("d/x")
				return errors.Is(err, unix.ENOENT)
			})
		})
	}
}
