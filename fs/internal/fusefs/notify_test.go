package fusefs

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/clamfuse/clamfuse/test/testenv"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// TestInvalidateNode checks on a real mount what each invalidation drops:
// InvalidateNodeAttr the attributes only, so the page cache of a file
// opened with OpenKeepCache still serves reads (upstream sent offset 0,
// which dropped the data too), and InvalidateNodeData the data as well.
func TestInvalidateNode(t *testing.T) {
	fsys := newMemFS()
	f := fsys.root.file("f", []byte("cached data\n"))
	f.keepCache = true
	m := mount(t, fsys)
	path := filepath.Join(m.dir, "f")
	read := func(what string, wantReads bool) {
		t.Helper()
		if got := m.run(t, "cat", path); got != "cached data\n" {
			t.Fatalf("%s: read %q", what, got)
		}
		if reads := fsys.count.take("read"); (len(reads) > 0) != wantReads {
			t.Errorf("%s: %d READs, want them: %v", what, len(reads), wantReads)
		}
	}
	read("first read", true)
	read("second read, from the page cache", false)
	if err := m.srv.InvalidateNodeAttr(f); err != nil {
		t.Fatalf("InvalidateNodeAttr: %v", err)
	}
	read("after InvalidateNodeAttr", false)
	if err := m.srv.InvalidateNodeData(f); err != nil {
		t.Fatalf("InvalidateNodeData: %v", err)
	}
	read("after InvalidateNodeData", true)
	if err := m.conn.InvalidateNode(fuse.NodeID(999999), -1, 0); err != fuse.ErrNotCached {
		t.Errorf("Conn.InvalidateNode of an unknown node: %v, want ErrNotCached", err)
	}
}

// TestExpireEntry checks that an expired entry is looked up again at its
// next use, on a kernel that offers FUSE_EXPIRE_ONLY (6.2 and later).
func TestExpireEntry(t *testing.T) {
	fsys := newMemFS()
	fsys.root.file("f", []byte("x"))
	m := mount(t, fsys, fuse.RequestInitFlags2(fuse.InitHasExpireOnly))
	if m.conn.Features2()&fuse.InitHasExpireOnly == 0 {
		if err := m.srv.ExpireEntry(fsys.root, "f"); err != syscall.ENOSYS {
			t.Errorf("ExpireEntry on a kernel without it: %v, want ENOSYS", err)
		}
		why := fmt.Sprintf("the kernel (protocol %v) does not offer FUSE_EXPIRE_ONLY (Linux 6.2 and later do)", m.conn.Protocol())
		testenv.Skip(t, "%s", why)
	}
	path := filepath.Join(m.dir, "f")
	m.run(t, "stat", path)
	m.run(t, "stat", path)
	if n := fsys.root.lookups.Load(); n != 1 {
		t.Fatalf("%d LOOKUPs of a name cached for a minute, want 1", n)
	}
	if err := m.srv.ExpireEntry(fsys.root, "f"); err != nil {
		t.Fatalf("ExpireEntry: %v", err)
	}
	m.run(t, "stat", path)
	if n := fsys.root.lookups.Load(); n != 2 {
		t.Errorf("%d LOOKUPs after ExpireEntry, want 2", n)
	}
	if err := m.srv.ExpireEntry(fsys.root, "nothing"); err != fuse.ErrNotCached {
		t.Errorf("ExpireEntry of a name not cached: %v, want ErrNotCached", err)
	}
}
