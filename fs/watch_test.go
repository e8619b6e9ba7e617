package fs

// Tests of the watcher's reading side on the real backing filesystem (the
// test's temporary directory): which changes queue which invalidations.
// The notifications themselves are tested on real mounts (test/watch_test.go).

import (
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// testWatcher is a watcher of a fresh directory with no mount: its
// reader runs only when the test drains it, and nothing is sent.
func testWatcher(t *testing.T, ownPID bool) (*FS, *watcher, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "fanotify (FAN_MARK_FILESYSTEM) needs root")
	}
	return testWatcherAt(t, t.TempDir(), ownPID)
}

// testWatcherAt is testWatcher of the directory root. If the test stops
// the watcher (stop), stop releases what it holds.
func testWatcherAt(t *testing.T, root string, ownPID bool) (*FS, *watcher, string) {
	t.Helper()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	f, err := New(fd, Options{Logger: slog.New(slog.DiscardHandler), AttrValid: time.Second, EntryValid: time.Second, WatchedValid: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{
		fsys: f, log: f.log, pid: -1,
		byHandle: map[string]weak.Pointer[Node]{}, byNode: map[weak.Pointer[Node]]string{}, pruneAt: 1024,
		limit: defaultWatchQueue, wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	w.g = newGuard(w.signal, w.stalled)
	t.Cleanup(w.g.stop)
	if ownPID {
		w.pid = int32(os.Getpid())
	}
	empty := map[uint64]*watchedFS{}
	w.devs.Store(&empty)
	w.resetQueue()
	w.forgot = map[entryKey]struct{}{}
	if err := w.startFanotify(); err != nil {
		testenv.Skip(t, "fanotify cannot watch %s here: %v", root, err)
	}
	f.watch = w
	t.Cleanup(func() {
		select {
		case <-w.done:
			return // stop released it all
		default:
		}
		w.fan.Close()
		unix.Close(w.stopFD)
		for _, d := range *w.devs.Load() {
			if d.fd >= 0 {
				unix.Close(d.fd)
			}
		}
	})
	return f, w, root
}

// TestWatcherStopQuiet: the reader waits for events in poll(2), outside
// Go's poller, and reads them as they come; stop ends it at once on a
// filesystem where nothing happens (a tmpfs of its own: no other
// process's event can wake it).
func TestWatcherStopQuiet(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mounting a tmpfs and fanotify (FAN_MARK_FILESYSTEM) need root")
	}
	q := t.TempDir()
	if err := unix.Mount("tmpfs", q, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(q, unix.MNT_DETACH) })
	_, w, root := testWatcherAt(t, q, false)
	w.wg.Add(1)
	go w.reader()
	if err := os.Mkdir(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.qMu.Lock()
		_, ok := w.entries[entryKey{w.fsys.rootN, "d"}]
		w.qMu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reader did not queue the directory made")
		}
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan struct{})
	go func() {
		w.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("stop did not return on a quiet filesystem")
	}
}

// lookup hands out the node of rel (slash-separated, beneath root) the
// way Lookup does, one component at a time (lookupNode, dirfd_test.go).
func lookup(t *testing.T, f *FS, rel string) *Node {
	t.Helper()
	n := f.rootN
	dir, base := filepath.Split(rel)
	if dir != "" {
		n = lookup(t, f, filepath.Clean(dir))
	}
	return lookupNode(t, f, n, base)
}

// drain reads events until cond holds of the queue, or d passes.
func drain(t *testing.T, w *watcher, d time.Duration, cond func() bool) bool {
	t.Helper()
	buf := make([]byte, 256<<10)
	deadline := time.Now().Add(d)
	for {
		w.qMu.Lock()
		ok := cond()
		w.qMu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(w.fan.Fd()), Events: unix.POLLIN}}
		if k, err := unix.Poll(fds, 10); err != nil || k == 0 {
			continue
		}
		if n, err := unix.Read(int(w.fan.Fd()), buf); err == nil {
			w.parse(buf[:n])
		}
	}
}

func TestWatcherQueues(t *testing.T) {
	f, w, root := testWatcher(t, false)
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(os.MkdirAll(filepath.Join(root, "d", "sub"), 0o755))
	mustDo(os.WriteFile(filepath.Join(root, "d", "f"), []byte("x"), 0o644))
	mustDo(os.Link(filepath.Join(root, "d", "f"), filepath.Join(root, "d", "h")))
	d := lookup(t, f, "d")
	sub := lookup(t, f, "d/sub")
	file := lookup(t, f, "d/f")
	w.take()

	entry := func(dir *Node, name string) func() bool {
		return func() bool { _, ok := w.entries[entryKey{dir, name}]; return ok }
	}
	child := func(dir *Node, name string) func() bool {
		return func() bool { _, ok := w.children[entryKey{dir, name}]; return ok }
	}
	attr := func(n *Node) func() bool {
		return func() bool { _, ok := w.attrs[n]; return ok }
	}
	tests := []struct {
		what   string
		change func()
		want   func() bool
	}{
		{"create", func() { mustDo(os.WriteFile(filepath.Join(root, "d", "new"), nil, 0o644)) }, entry(d, "new")},
		{"chmod", func() { mustDo(os.Chmod(filepath.Join(root, "d", "f"), 0o600)) }, child(d, "f")},
		{"append", func() {
			fh, err := os.OpenFile(filepath.Join(root, "d", "f"), os.O_WRONLY|os.O_APPEND, 0)
			mustDo(err)
			_, err = fh.WriteString("y")
			mustDo(err)
			mustDo(fh.Close())
		}, child(d, "f")},
		{"dir chmod", func() { mustDo(os.Chmod(filepath.Join(root, "d", "sub"), 0o700)) }, attr(sub)},
		{"in a subdirectory", func() { mustDo(os.WriteFile(filepath.Join(root, "d", "sub", "x"), nil, 0o644)) }, entry(sub, "x")},
		{"rename", func() { mustDo(os.Rename(filepath.Join(root, "d", "new"), filepath.Join(root, "d", "new2"))) },
			func() bool { return entry(d, "new")() && entry(d, "new2")() }},
		{"unlink of a second name", func() { mustDo(os.Remove(filepath.Join(root, "d", "h"))) },
			func() bool { return entry(d, "h")() && len(w.fids) > 0 }},
		{"dir renamed", func() { mustDo(os.Rename(filepath.Join(root, "d", "sub"), filepath.Join(root, "d", "sub2"))) },
			func() bool { return entry(d, "sub")() && entry(d, "sub2")() && attr(sub)() }},
	}
	for _, tt := range tests {
		tt.change()
		if !drain(t, w, 5*time.Second, tt.want) {
			w.qMu.Lock()
			t.Errorf("%s: queued entries %v children %v attrs %v fids %d", tt.what, w.entries, w.children, w.attrs, len(w.fids))
			w.qMu.Unlock()
		}
		b := w.take()
		if tt.what == "unlink of a second name" {
			for c := range b.fids {
				if n := w.byFID(c); n != file {
					t.Errorf("the file left with one name is found by handle as %v, want %v", n, file)
				}
			}
		}
	}
	if !w.covers(d.id.dev) {
		t.Error("the source's filesystem is not covered")
	}
	if got := f.attrValid(&unix.Stat_t{Dev: d.id.dev, Nlink: 1, Mode: unix.S_IFREG}); got != time.Hour {
		t.Errorf("attrValid of a watched file: %v, want the watched timeout", got)
	}
	if got := f.attrValid(&unix.Stat_t{Dev: d.id.dev, Nlink: 2, Mode: unix.S_IFREG}); got != time.Second {
		t.Errorf("attrValid of a file with two names: %v, want the short timeout", got)
	}
	if got := f.attrValid(&unix.Stat_t{Dev: d.id.dev + 12345, Nlink: 1, Mode: unix.S_IFREG}); got != time.Second {
		t.Errorf("attrValid on a filesystem not watched: %v, want the short timeout", got)
	}
}

// TestWatcherIgnoresOwnChanges: what clamfuse itself does on the backing
// directory (its pid) queues nothing; another directory of the same
// filesystem neither.
func TestWatcherIgnoresOwnChanges(t *testing.T) {
	f, w, root := testWatcher(t, true)
	if err := os.Mkdir(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	lookup(t, f, "d")
	other := t.TempDir()
	w.take()
	for i := range 20 {
		os.WriteFile(filepath.Join(root, "d", "f"), []byte{byte(i)}, 0o644)
		os.Chmod(filepath.Join(root, "d", "f"), 0o600)
		os.Remove(filepath.Join(root, "d", "f"))
	}
	// Another process, in a directory the kernel knows nothing of.
	if err := os.WriteFile(filepath.Join(other, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	drain(t, w, 300*time.Millisecond, func() bool { return false })
	b := w.take()
	if len(b.entries)+len(b.children)+len(b.attrs)+len(b.fids) > 0 || b.broad != "" {
		t.Errorf("queued %v %v %v %v %q", b.entries, b.children, b.attrs, b.fids, b.broad)
	}
}

// TestWatcherOverflow: more pending work than the bound turns into one
// invalidation of everything.
func TestWatcherOverflow(t *testing.T) {
	f, w, root := testWatcher(t, false)
	w.limit = 4
	if err := os.Mkdir(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	lookup(t, f, "d")
	w.take()
	for i := range 10 {
		os.WriteFile(filepath.Join(root, "d", string(rune('a'+i))), nil, 0o644)
	}
	if !drain(t, w, 5*time.Second, func() bool { return w.broad != "" }) {
		t.Fatal("no overflow")
	}
	if b := w.take(); len(b.entries)+len(b.attrs) != 0 {
		t.Errorf("an overflow keeps %d entries and %d attributes queued", len(b.entries), len(b.attrs))
	}
}

// TestWatcherForgottenName: a name that no longer leads to the node
// clamfuse handed out for it, found when a request looks for the node's
// names, is dropped from the tree and queued for expiry apart from the
// rest: an overflow, whose invalidation of everything goes by the tree,
// keeps it queued.
func TestWatcherForgottenName(t *testing.T) {
	f, w, root := testWatcher(t, false)
	w.limit = 4
	for _, name := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := lookup(t, f, "a")
	if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, "a"), unix.AT_FDCWD, filepath.Join(root, "b"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	a.stat() // the name a leads to another inode now: dropped
	if got := a.linksSnapshot(); len(got) != 0 {
		t.Fatalf("a's names after the exchange: %v, want none known", got)
	}
	w.queueAll("a test overflow")
	got := w.take()
	if got.broad == "" {
		t.Fatal("no overflow")
	}
	if _, ok := got.forgot[entryKey{f.rootN, "a"}]; !ok || len(got.forgot) != 1 {
		t.Errorf("forgotten names queued: %v, want the name a in the root", got.forgot)
	}
}

// noted records the entry notifications a watcher sends, as "expire
// path" or "invalidate path", in place of a FUSE server.
type noted struct {
	mu   sync.Mutex
	sent []string
}

func (r *noted) InvalidateNodeAttr(fusefs.Node) error { return nil }
func (r *noted) InvalidateNodeData(fusefs.Node) error { return nil }

func (r *noted) InvalidateEntry(parent fusefs.Node, name string) error {
	r.add("invalidate", parent, name)
	return nil
}

func (r *noted) ExpireEntry(parent fusefs.Node, name string) error {
	r.add("expire", parent, name)
	return nil
}

func (r *noted) add(what string, parent fusefs.Node, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, what+" "+path.Join(parent.(*Node).RelPath(), name))
}

// take returns what was sent, sorted, and forgets it.
func (r *noted) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.sent
	r.sent = nil
	slices.Sort(out)
	return out
}

// TestWatcherChangedNamesInvalidated: a name that may lead elsewhere now
// than the node the kernel was given for it is invalidated (the kernel
// unhashes the entry), never only expired: the kernel revalidates an
// expired entry without a lock the notification waits for, so a LOOKUP
// answered before the change and applied after the expiry would make
// the stale entry valid again for the whole watched timeout
// (TestWatchOverflowRace, about one run in ten). A name that leads to
// the node it was given for, or to a directory the kernel may know, is
// expired, keeping what is mounted on it and the processes working in it. Each case changes the backing directory
// (no notification is sent for it: the watcher's reader does not run),
// queues what the watcher's reader or a request would, and sends one
// batch.
func TestWatcherChangedNamesInvalidated(t *testing.T) {
	exchange := func(t *testing.T, root, a, b string) {
		t.Helper()
		mustNoErr(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, a), unix.AT_FDCWD, filepath.Join(root, b), unix.RENAME_EXCHANGE))
	}
	tests := []struct {
		name   string
		change func(t *testing.T, f *FS, w *watcher, root string)
		want   []string
	}{
		{"a name dropped as leading elsewhere", func(t *testing.T, f *FS, w *watcher, root string) {
			a := lookup(t, f, "a")
			exchange(t, root, "a", "b")
			a.stat() // finds that a leads elsewhere: dropped (forgotten)
		}, []string{"invalidate a"}},
		{"overflow: names of the tree that lead elsewhere now", func(t *testing.T, f *FS, w *watcher, root string) {
			for _, name := range []string{"a", "b", "c", "d", "d/x"} {
				lookup(t, f, name)
			}
			exchange(t, root, "a", "b")
			w.queueAll("a test overflow")
		}, []string{"expire c", "expire d", "expire d/x", "invalidate a", "invalidate b"}},
		{"overflow: a name dropped meanwhile", func(t *testing.T, f *FS, w *watcher, root string) {
			a := lookup(t, f, "a")
			exchange(t, root, "a", "b")
			a.stat()
			w.queueAll("a test overflow")
		}, []string{"invalidate a"}},
		{"a name replaced by a file", func(t *testing.T, f *FS, w *watcher, root string) {
			lookup(t, f, "a")
			exchange(t, root, "a", "b")
			w.queueEntry(f.rootN, "a")
		}, []string{"invalidate a"}},
		{"a name removed", func(t *testing.T, f *FS, w *watcher, root string) {
			lookup(t, f, "c")
			mustNoErr(t, os.Remove(filepath.Join(root, "c")))
			w.queueEntry(f.rootN, "c")
		}, []string{"invalidate c"}},
		{"a directory renamed", func(t *testing.T, f *FS, w *watcher, root string) {
			lookup(t, f, "d")
			mustNoErr(t, os.Rename(filepath.Join(root, "d"), filepath.Join(root, "e")))
			w.queueEntry(f.rootN, "d")
			w.queueEntry(f.rootN, "e")
		}, []string{"expire e", "invalidate d"}},
		{"a name dropped, a directory's now", func(t *testing.T, f *FS, w *watcher, root string) {
			c := lookup(t, f, "c")
			lookup(t, f, "d")
			mustNoErr(t, os.Rename(filepath.Join(root, "c"), filepath.Join(root, "c2")))
			mustNoErr(t, os.Rename(filepath.Join(root, "d"), filepath.Join(root, "c")))
			c.stat()
		}, []string{"expire c"}},
		{"overflow: a file replaced by a directory", func(t *testing.T, f *FS, w *watcher, root string) {
			lookup(t, f, "c")
			lookup(t, f, "d")
			mustNoErr(t, os.Rename(filepath.Join(root, "c"), filepath.Join(root, "c2")))
			mustNoErr(t, os.Rename(filepath.Join(root, "d"), filepath.Join(root, "c")))
			w.queueAll("a test overflow")
		}, []string{"expire c", "invalidate d"}},
		{"a file clamfuse moved (quarantine)", func(t *testing.T, f *FS, w *watcher, root string) {
			c := lookup(t, f, "c")
			mustNoErr(t, os.Rename(filepath.Join(root, "c"), filepath.Join(root, "c.quarantined")))
			w.changed(c)
		}, []string{"invalidate c"}},
		{"a file changed in place", func(t *testing.T, f *FS, w *watcher, root string) {
			c := lookup(t, f, "c")
			mustNoErr(t, os.Chmod(filepath.Join(root, "c"), 0o600))
			w.changed(c)
		}, []string{"expire c"}},
	}
	// Without FUSE_EXPIRE_ONLY (Linux before 6.2: Debian 12's 6.1) every
	// expiry is an invalidation.
	for _, expireOnly := range []bool{true, false} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/expire_only=%v", tt.name, expireOnly), func(t *testing.T) {
				f, w, root := testWatcher(t, false)
				rec := &noted{}
				w.srv, w.expireOnly = rec, expireOnly
				for _, name := range []string{"a", "b", "c"} {
					mustNoErr(t, os.WriteFile(filepath.Join(root, name), []byte(name), 0o644))
				}
				mustNoErr(t, os.MkdirAll(filepath.Join(root, "d", "x"), 0o755))
				w.take()
				tt.change(t, f, w, root)
				w.send(w.take())
				want := slices.Clone(tt.want)
				if !expireOnly {
					for i, x := range want {
						want[i] = strings.Replace(x, "expire ", "invalidate ", 1)
					}
					slices.Sort(want)
				}
				if got := rec.take(); !slices.Equal(got, want) {
					t.Errorf("sent %q, want %q", got, want)
				}
			})
		}
	}
}

// TestSettled: a name looked up while the watcher took a batch, which
// may have looked at the tree before the name was recorded there, is
// looked at again: if it leads elsewhere now, it gets no time of
// validity and is dropped (forgotten, so invalidated with the next
// batch). Without a batch taken meanwhile, the next batch finds the name
// in the tree.
func TestSettled(t *testing.T) {
	tests := []struct {
		name      string
		batch     bool // a batch is taken between the lookup and the check
		exchanged bool // the name leads elsewhere by then
		settled   bool
	}{
		{"no batch taken", false, true, true},
		{"a batch taken, the name unchanged", true, false, true},
		{"a batch taken, the name changed", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, w, root := testWatcher(t, false)
			for _, name := range []string{"a", "b"} {
				mustNoErr(t, os.WriteFile(filepath.Join(root, name), []byte(name), 0o644))
			}
			w.take()
			seq := w.batchesTaken()
			a := lookup(t, f, "a")
			if tt.exchanged {
				mustNoErr(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, "a"), unix.AT_FDCWD, filepath.Join(root, "b"), unix.RENAME_EXCHANGE))
			}
			if tt.batch {
				w.take()
			}
			got := f.settled(seq, f.root, f.rootN, "a", a)
			if got != tt.settled {
				t.Errorf("settled: %v, want %v", got, tt.settled)
			}
			links := a.linksSnapshot()
			b := w.take()
			_, forgot := b.forgot[entryKey{f.rootN, "a"}]
			if kept := len(links) == 1; kept != tt.settled || forgot == tt.settled {
				t.Errorf("the name after the check: kept %v, forgotten %v; want kept %v", kept, forgot, tt.settled)
			}
		})
	}
}

// The two ways to map an event's directory handle to a node: register
// each directory by handle as the kernel meets it (what the watcher does:
// one open, fstat, name_to_handle_at and close per directory, then a map
// lookup per event), or open every event's handle (open_by_handle_at,
// fstat and close per event, most of them for directories elsewhere on
// the filesystem).

func BenchmarkWatchRegisterDir(b *testing.B) {
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		b.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(dfd)
	for b.Loop() {
		fd, err := unix.Openat(dfd, "d", unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			b.Fatal(err)
		}
		if _, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH); err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

func BenchmarkWatchOpenByHandle(b *testing.B) {
	if os.Geteuid() != 0 {
		testenv.Skip(b, "open_by_handle_at needs CAP_DAC_READ_SEARCH")
	}
	dir := b.TempDir()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
	if err != nil {
		b.Fatal(err)
	}
	mfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(mfd)
	for b.Loop() {
		fd, err := unix.OpenByHandleAt(mfd, h, unix.O_PATH|unix.O_CLOEXEC)
		if err != nil {
			b.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

// BenchmarkWatchParseElsewhere is the cost of an event in a directory the
// kernel does not know: parsed and dropped after one map lookup.
func BenchmarkWatchParseElsewhere(b *testing.B) {
	w := &watcher{byHandle: map[string]weak.Pointer[Node]{}, pid: -1}
	for i := range 10000 {
		w.byHandle[handleKey([]byte("fsidfsid"), 1, []byte{byte(i), byte(i >> 8), 0, 0, 1, 2, 3, 4})] = weak.Pointer[Node]{}
	}
	// One FAN_MODIFY event: metadata, a DFID_NAME record (fsid, an
	// 8-byte handle of type 1, "name\0" padded) and an FID record.
	ev := make([]byte, 0, 128)
	rec := func(typ byte, name string) []byte {
		r := []byte{typ, 0, 0, 0}
		r = append(r, "fsidfsid"...)
		r = append(r, 8, 0, 0, 0, 1, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9)
		if name != "" {
			r = append(r, name...)
			r = append(r, 0)
		}
		for len(r)%4 != 0 {
			r = append(r, 0)
		}
		r[2] = byte(len(r))
		return r
	}
	body := append(rec(fanInfoDFIDName, "name"), rec(fanInfoFID, "")...)
	ev = append(ev, make([]byte, fanMetaSize)...)
	ev = append(ev, body...)
	ev[0] = byte(len(ev))
	ev[4] = 3 // FANOTIFY_METADATA_VERSION
	ev[6] = fanMetaSize
	ev[8] = byte(unix.FAN_MODIFY)
	ev[20] = 1 // pid
	buf := make([]byte, 0, len(ev)*100)
	for range 100 {
		buf = append(buf, ev...)
	}
	b.SetBytes(int64(len(ev)))
	for b.Loop() {
		if w.parse(buf) {
			b.Fatal("queued an event of an unknown directory")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/event")
}

// TestWatcherKernelOverflowFlood: a user floods the watched filesystem
// with changes, none of them beneath a directory the kernel knows (files
// made and removed elsewhere on it), as fast as they can. The flood
// first fills the kernel's fanotify queue before the reader runs: the
// reader then finds the kernel's overflow and queues the invalidation of
// everything, so no change lost in it goes unseen. While the flood goes
// on, a change in a known directory is still queued within seconds (or
// everything is), each time; and stop (the unmount) returns promptly,
// the reader's poll woken by stop's eventfd however busy the fanotify
// descriptor is.
func TestWatcherKernelOverflowFlood(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mounting a tmpfs and fanotify (FAN_MARK_FILESYSTEM) need root")
	}
	max, err := os.ReadFile("/proc/sys/fs/fanotify/max_queued_events")
	if err != nil {
		testenv.Skip(t, "no fanotify queue bound to read: %v", err)
	}
	queued, err := strconv.Atoi(strings.TrimSpace(string(max)))
	if err != nil || queued <= 0 || queued > 1<<20 {
		testenv.Skip(t, "fanotify max_queued_events %q: not a bound this test can fill", max)
	}
	q := t.TempDir()
	if err := unix.Mount("tmpfs", q, "tmpfs", 0, "size=16m,nr_inodes=1m,mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(q, unix.MNT_DETACH) })
	f, w, root := testWatcherAt(t, q, false)
	w.limit = 1 << 30 // only the kernel's queue may overflow here
	for _, d := range []string{"d", "flood"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d := lookup(t, f, "d")
	flood := filepath.Join(root, "flood")
	// More events than the kernel queues, before the reader reads any.
	for i := range queued + 1000 {
		fd, err := unix.Open(filepath.Join(flood, strconv.Itoa(i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	w.wg.Add(1)
	go w.reader()
	broad := func() string {
		w.qMu.Lock()
		defer w.qMu.Unlock()
		return w.broad
	}
	waitFor(t, "the kernel's overflow queued as an invalidation of everything", func() bool {
		return broad() == "the kernel's fanotify queue overflowed"
	})

	stopFlood := make(chan struct{})
	var flooding sync.WaitGroup
	flooding.Add(1)
	go func() {
		defer flooding.Done()
		for i := 0; ; i++ {
			select {
			case <-stopFlood:
				return
			default:
			}
			p := filepath.Join(flood, "x"+strconv.Itoa(i%4096))
			if fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644); err == nil {
				unix.Write(fd, []byte("x"))
				unix.Close(fd)
			}
			unix.Unlink(p)
		}
	}()
	defer func() {
		close(stopFlood)
		flooding.Wait()
	}()
	for i := range 5 {
		w.take()
		name := "c" + strconv.Itoa(i)
		start := time.Now()
		if err := os.WriteFile(filepath.Join(root, "d", name), []byte("changed"), 0o644); err != nil {
			t.Fatal(err)
		}
		for {
			w.qMu.Lock()
			_, ok := w.entries[entryKey{d, name}]
			ok = ok || w.broad != ""
			w.qMu.Unlock()
			if ok {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("change %d in a known directory not queued within 5s during the flood", i)
			}
			time.Sleep(time.Millisecond)
		}
		t.Logf("change %d queued after %v", i, time.Since(start).Round(time.Microsecond))
	}
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		w.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Logf("stop returned %v into the flood", time.Since(start).Round(time.Microsecond))
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return within 10s during a flood of events")
	}
}
