package test

import (
	"bytes"
	"os"
	"path/filepath"
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
