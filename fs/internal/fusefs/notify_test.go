package fusefs

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

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

// parkFS is a memFS whose root can park a LOOKUP of one name after it
// has chosen its answer, until the test releases it: a LOOKUP answered
// before a change and sent after the change's notification.
type parkFS struct{ root *parkDir }

func (f *parkFS) Root() (Node, error) { return f.root, nil }

type parkDir struct {
	*memDir
	park     atomic.Pointer[string] // the name whose next LOOKUP parks
	entered  chan struct{}          // a LOOKUP parked
	released chan struct{}          // the parked LOOKUP may answer
}

func (d *parkDir) Lookup(ctx context.Context, name string) (Node, error) {
	n, err := d.memDir.Lookup(ctx, name)
	if p := d.park.Load(); p != nil && *p == name && d.park.CompareAndSwap(p, nil) {
		d.entered <- struct{}{}
		<-d.released
	}
	return n, err
}

// TestEntryNotifiedDuringRevalidation shows on a real mount why the
// watcher (fs/watch.go) drops a name that leads elsewhere now instead of
// expiring it: the kernel revalidates an expired entry without a lock a
// notification waits for, and applies the answer of its LOOKUP after
// any notification sent meanwhile. A LOOKUP that chose its answer (the
// entry's own node) before a change, and is answered after the change's
// expiry, makes the stale entry valid again for its whole time of
// validity; an entry dropped (InvalidateEntry) is not found again,
// whatever the LOOKUP in flight brings back. The name "a" is exchanged
// with "b" while the kernel's revalidation of "a" is parked in LOOKUP.
func TestEntryNotifiedDuringRevalidation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		notify func(m *mounted, dir Node) error
		fresh  bool // the change must show
	}{
		{"invalidate", func(m *mounted, dir Node) error { return m.srv.InvalidateEntry(dir, "a") }, true},
		{"expire", func(m *mounted, dir Node) error { return m.srv.ExpireEntry(dir, "a") }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mem := newMemFS()
			fa, fb := mem.root.file("a", []byte("a")), mem.root.file("b", []byte("b"))
			root := &parkDir{memDir: mem.root, entered: make(chan struct{}), released: make(chan struct{})}
			m := mount(t, &parkFS{root}, fuse.RequestInitFlags2(fuse.InitHasExpireOnly))
			if m.conn.Features2()&fuse.InitHasExpireOnly == 0 {
				testenv.Skip(t, "the kernel (protocol %v) does not offer FUSE_EXPIRE_ONLY (Linux 6.2 and later do)", m.conn.Protocol())
			}
			path := filepath.Join(m.dir, "a")
			ino := func() string { return strings.TrimSpace(m.run(t, "stat", "-c", "%i", path)) }
			inoA, inoB := fmt.Sprint(fa.inode), fmt.Sprint(fb.inode)
			if got := ino(); got != inoA {
				t.Fatalf("a is inode %s, want %s", got, inoA)
			}
			// Expired: the next use revalidates, its LOOKUP parks.
			if err := m.srv.ExpireEntry(root, "a"); err != nil {
				t.Fatalf("ExpireEntry: %v", err)
			}
			name := "a"
			root.park.Store(&name)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stat := exec.CommandContext(ctx, "stat", "-c", "%i", path)
			out := new(strings.Builder)
			stat.Stdout = out
			if err := stat.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-root.entered:
			case <-ctx.Done():
				abort(t, m.dir)
				t.Fatal("no LOOKUP of a within a minute")
			}
			// The change, and its notification, while the LOOKUP that
			// chose a's old node waits to be answered.
			root.mu.Lock()
			root.entries["a"], root.entries["b"] = fb, fa
			root.mu.Unlock()
			if err := tt.notify(m, root); err != nil {
				t.Fatalf("notification: %v", err)
			}
			close(root.released)
			if err := stat.Wait(); err != nil || ctx.Err() != nil {
				abort(t, m.dir)
				t.Fatalf("stat during the revalidation: %v %v", err, ctx.Err())
			}
			got := ino()
			switch {
			case got == inoB:
				t.Logf("after the exchange, a is inode %s (b's): the notification held", got)
			case tt.fresh:
				t.Errorf("after the exchange, a is still inode %s (a's old one), want %s: the notification was lost to the LOOKUP in flight", got, inoB)
			default:
				// What the watcher avoids; a kernel that ordered the
				// two would show the change here too.
				t.Logf("after the exchange, a is still inode %s (a's old one), want %s: the expiry was lost to the LOOKUP in flight", got, inoB)
			}
		})
	}
}

// TestInvalidateBeforeServed: a file system may ask for invalidations
// before and while it starts being served (clamfuse's watcher of the
// backing directory starts before Serve does): they find nothing cached
// until the kernel holds the node, and no access to the node table is
// unguarded (CI's race detector once caught Serve making the root's
// records without the lock that InvalidateEntry takes).
func TestInvalidateBeforeServed(t *testing.T) {
	fsys := newMemFS()
	fsys.root.file("f", []byte("x"))
	stop, done := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	m := mountServe(t, fsys, nil, func(srv *Server) {
		go func() {
			defer close(done)
			for {
				if err := srv.InvalidateEntry(fsys.root, "f"); err != nil && err != fuse.ErrNotCached {
					t.Errorf("InvalidateEntry while Serve starts: %v", err)
					return
				}
				calls.Add(1)
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	})
	m.run(t, "stat", filepath.Join(m.dir, "f")) // served
	close(stop)
	<-done
	if calls.Load() == 0 {
		t.Fatal("no invalidation was asked for")
	}
	m.run(t, "stat", filepath.Join(m.dir, "f")) // looked up again, if dropped
	if err := m.srv.InvalidateEntry(fsys.root, "f"); err != nil {
		t.Errorf("InvalidateEntry of a name the kernel holds: %v", err)
	}
}
