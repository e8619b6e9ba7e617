package test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestHostileRenameat2 (issue #12): renameat2's flags through the mount
// are the caller's own, decided by the backing filesystem. A cannot
// exchange its file with B's in a sticky directory (EPERM, as natively),
// and RENAME_NOREPLACE onto B's file fails with EEXIST: nothing of B's
// changes, and A's file stays where it was.
func TestHostileRenameat2(t *testing.T) {
	l := newShared(t, "")
	shared := filepath.Join(l.src, "shared")
	mkDir(t, shared, 0o1777, 0, 0)
	mine, vic := filepath.Join(shared, "mine"), filepath.Join(shared, "vic")
	mkFile(t, mine, "A's own data", 0o644, l.a.uid, l.a.ga)
	mkFile(t, vic, bSecret, 0o600, l.b.uid, l.b.ga)
	want, wantMine := snapVictim(t, vic), snapVictim(t, mine)
	mp, vp := l.m.Path("shared/mine"), l.m.Path("shared/vic")
	var outs [4]string
	l.m.Within(t, time.Minute, "renameat2 as A", func() {
		outs[0] = fsop(l.a.cred, "rename-exchange", mp, vp)
		outs[1] = fsop(l.a.cred, "rename-exchange", vp, mp)
		outs[2] = fsop(l.a.cred, "rename-noreplace", mp, vp)
		outs[3] = fsop(l.a.cred, "rename-noreplace", mp, l.m.Path("shared/mine2"))
	})
	for i, w := range []string{"EPERM", "EPERM", "EEXIST", "ok"} {
		if outs[i] != w {
			t.Errorf("step %d: A got %q, want %q", i, outs[i], w)
		}
	}
	findVictim(t, shared, want, "B's 0600 file")
	if got := snapVictim(t, filepath.Join(shared, "mine2")); got != wantMine {
		t.Errorf("A's file renamed with RENAME_NOREPLACE changed: %+v, want %+v", got, wantMine)
	}
	if _, err := os.Lstat(vic); err != nil {
		t.Errorf("B's name is gone: %v", err)
	}
	// Not a directory A may not write to, either.
	mkDir(t, filepath.Join(l.src, "closed"), 0o755, l.b.uid, l.b.ga)
	mkFile(t, filepath.Join(l.src, "closed/f"), "B's", 0o644, l.b.uid, l.b.ga)
	var out string
	l.m.Within(t, time.Minute, "exchange into a closed directory", func() {
		out = fsop(l.a.cred, "rename-exchange", l.m.Path("shared/mine2"), l.m.Path("closed/f"))
	})
	if out != "EACCES" {
		t.Errorf("A exchanged into B's 0755 directory: %q, want EACCES", out)
	}
}

// TestRenameExchangeVerdicts (issue #12): verdicts go with the inodes an
// exchange swaps. Through the mount: the infected file stays denied under
// its new name, and the clean one is served under the other. Behind the
// mount: a name the kernel knows as clean that now leads to the infected
// file is denied at its very next open.
func TestRenameExchangeVerdicts(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", clamd.Address(), "--timeout", "30s"}})
	mustDo(t, os.WriteFile(m.Backing("clean"), []byte("clean data"), 0o644))
	mustDo(t, os.WriteFile(m.Backing("bad"), clamdtest.EICAR(), 0o644))
	read := func(name string) string {
		var b []byte
		var err error
		m.Within(t, scanBound, "read "+name, func() { b, err = os.ReadFile(m.Path(name)) })
		if err != nil {
			return errnoName(err)
		}
		return string(b)
	}
	check := func(when string, want map[string]string) {
		t.Helper()
		for name, w := range want {
			if got := read(name); got != w {
				t.Errorf("%s: %s reads %q, want %q", when, name, got, w)
			}
		}
	}
	check("before", map[string]string{"clean": "clean data", "bad": "EACCES"})
	var err error
	m.Within(t, time.Minute, "exchange", func() {
		err = unix.Renameat2(unix.AT_FDCWD, m.Path("clean"), unix.AT_FDCWD, m.Path("bad"), unix.RENAME_EXCHANGE)
	})
	mustDo(t, err)
	check("exchanged through the mount", map[string]string{"clean": "EACCES", "bad": "clean data"})
	// And back, in the backing directory.
	mustDo(t, unix.Renameat2(unix.AT_FDCWD, m.Backing("clean"), unix.AT_FDCWD, m.Backing("bad"), unix.RENAME_EXCHANGE))
	// "clean" is denied at once: its node is the infected inode, which
	// no longer has that name. "bad" is the clean inode's node to the
	// kernel until the watcher expires the name (within watchBound): an
	// open meanwhile is of the clean file, which has another name now,
	// never of bytes not judged.
	check("exchanged behind the mount", map[string]string{"clean": "clean data"})
	eventually(t, watchBound, "bad, exchanged behind the mount, denied", func() bool {
		got := read("bad")
		if got != "EACCES" && got != "clean data" {
			t.Fatalf("exchanged behind the mount: bad reads %q", got)
		}
		return got == "EACCES"
	})
	if b, _ := os.ReadFile(m.Backing("bad")); !bytes.Equal(b, clamdtest.EICAR()) {
		t.Errorf("the infected file changed")
	}
}

// TestHostileTmpfile (issue #12): O_TMPFILE through the mount is the
// caller's: in a directory A may not write to it fails with EACCES (and
// leaves nothing), in one A may it makes a file of A's, mode per A's
// umask, that A can name.
func TestHostileTmpfile(t *testing.T) {
	l := newShared(t, "")
	mkDir(t, filepath.Join(l.src, "closed"), 0o755, l.b.uid, l.b.ga)
	mkDir(t, filepath.Join(l.src, "open"), 0o1777, 0, 0)
	var outs [4]string
	l.m.Within(t, time.Minute, "tmpfiles as A", func() {
		outs[0] = fsop(l.a.cred, "tmpfile", l.m.Path("closed"), "0600", "A's", l.m.Path("closed/a"))
		outs[1] = fsop(l.a.cred, "tmpfile", l.m.Path("closed"), "0600", "A's", "-")
		outs[2] = fsop(l.a.cred, "with-umask", "027", "tmpfile", l.m.Path("open"), "0666", "A's data", l.m.Path("open/a"))
		// Named where A may not write: the link fails, as natively.
		outs[3] = fsop(l.a.cred, "tmpfile", l.m.Path("open"), "0600", "A's", l.m.Path("closed/b"))
	})
	for i, w := range []string{"EACCES", "EACCES", "ok", "EACCES"} {
		if outs[i] != w {
			t.Errorf("step %d: A got %q, want %q", i, outs[i], w)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(l.src, "closed")); len(ents) != 0 {
		t.Errorf("B's directory has %d entries after A's tmpfiles", len(ents))
	}
	var st unix.Stat_t
	mustDo(t, unix.Lstat(filepath.Join(l.src, "open/a"), &st))
	if st.Uid != l.a.uid || st.Gid != l.a.ga || st.Mode&0o7777 != 0o640 {
		t.Errorf("A's tmpfile: uid %d gid %d mode %04o, want %d %d 0640", st.Uid, st.Gid, st.Mode&0o7777, l.a.uid, l.a.ga)
	}
	if b, err := os.ReadFile(filepath.Join(l.src, "open/a")); err != nil || string(b) != "A's data" {
		t.Errorf("A's tmpfile holds %q, %v", b, err)
	}
}

// TestTmpfileScanned (issue #12): what is written to an O_TMPFILE file
// through the mount is judged at the first open for reading after the
// file was named, while the tmpfile is still open for writing and after
// it was closed; never served unscanned.
func TestTmpfileScanned(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", clamd.Address(), "--timeout", "30s"}})
	read := func(name string) string {
		var b []byte
		var err error
		m.Within(t, scanBound, "read "+name, func() { b, err = os.ReadFile(m.Path(name)) })
		if err != nil {
			return errnoName(err)
		}
		return string(b)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"clean", []byte("clean tmpfile"), "clean tmpfile"},
		{"infected", clamdtest.EICAR(), "EACCES"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fd int
			var err error
			m.Within(t, time.Minute, "tmpfile", func() {
				if fd, err = unix.Open(m.Target, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644); err != nil {
					return
				}
				if _, err = unix.Write(fd, c.data[:len(c.data)/2]); err != nil {
					return
				}
				if err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, m.Path(c.name), unix.AT_SYMLINK_FOLLOW); err != nil {
					return
				}
				_, err = unix.Write(fd, c.data[len(c.data)/2:])
			})
			mustDo(t, err)
			if got := read(c.name); got != c.want {
				t.Errorf("named, still open for writing: %q, want %q", got, c.want)
			}
			unix.Close(fd)
			if got := read(c.name); got != c.want {
				t.Errorf("named and closed: %q, want %q", got, c.want)
			}
		})
	}
}

// TestHostileReaddirPlusUnsearchable (issue #12): READDIRPLUS hands the
// kernel nodes and attributes only where the caller could look the names
// up: A may list B's directory (r) but not search it (no x), as natively
// A gets the names and no attributes: stat of an entry fails with EACCES,
// after A's own listing and after root's (which made the nodes known).
func TestHostileReaddirPlusUnsearchable(t *testing.T) {
	l := newShared(t, "[mount]\nreaddirplus = \"on\"\n")
	dir := filepath.Join(l.src, "listonly")
	mkDir(t, dir, 0o744, l.b.uid, l.b.ga)
	mkFile(t, filepath.Join(dir, "f"), bSecret, 0o644, l.b.uid, l.b.ga)
	var outs [4]string
	l.m.Within(t, time.Minute, "A lists and stats", func() {
		outs[0] = fsop(l.a.cred, "list", l.m.Path("listonly"))
		outs[1] = fsop(l.a.cred, "lstat", l.m.Path("listonly/f"))
		if _, err := os.ReadDir(l.m.Path("listonly")); err != nil {
			t.Errorf("root lists: %v", err)
		}
		outs[2] = fsop(l.a.cred, "list", l.m.Path("listonly"))
		outs[3] = fsop(l.a.cred, "cat", l.m.Path("listonly/f"))
	})
	t.Logf("A: %q", outs)
	if !strings.Contains(outs[0], "f") || !strings.Contains(outs[2], "f") {
		t.Errorf("A cannot list the names: %q, %q", outs[0], outs[2])
	}
	for _, i := range []int{1, 3} {
		if outs[i] != "EACCES" {
			t.Errorf("A through an unsearchable directory: %q, want EACCES", outs[i])
		}
	}
}
