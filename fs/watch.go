package fs

import (
	"encoding/binary"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Invalidation: the kernel may trust names and attributes for long
// (Options.WatchedValid) because clamfuse tells it, within milliseconds,
// when one of them changes in the backing directory. The changes come
// from the backing filesystem itself: one fanotify group per mount marks
// every filesystem met beneath the source (FAN_MARK_FILESYSTEM), and
// reports each change as the file handle of the directory it happened in
// and the name (FAN_REPORT_DFID_NAME; watch_fanotify.go). Directories the
// kernel knows are registered by file handle as clamfuse hands them out
// (FS.node); an event in any other directory, which is most of what a
// whole filesystem reports, is dropped at once: the kernel has nothing
// cached there. (Measured, watch_test.go: registering costs about 4 µs
// once per directory, a dropped event 30 to 50 ns; opening each event's
// handle instead would cost 3 to 4 µs for every event on the filesystem.)
//
// Changes made through the mount are clamfuse's own system calls: the
// kernel made them and knows their outcome, so their events (by
// clamfuse's pid) are dropped too. What clamfuse changes on its own
// (quarantine) it reports itself (watcher.changed).
//
// A filesystem that cannot be watched (not root, a kernel before 5.9, a
// filesystem fanotify cannot watch whole with file handles: overlayfs,
// FUSE, a btrfs subvolume other than the top-level one, some network
// filesystems) keeps the short timeouts (Options.AttrValid and
// EntryValid) for everything on it; so does a file with several names,
// since one of them may be in a directory clamfuse does not know.
//
// A file written behind the mount has its attributes invalidated, not its
// page cache (InvalidateNodeData): the next open drops that cache unless
// the file is in the very state the cache holds (keepCache, file.go), and
// a new size seen at the next stat makes the kernel drop the pages
// itself; dropping them sooner would only make a descriptor opened
// before the write read bytes no scan judged, sooner.
//
// Notifications are writes to /dev/fuse that wait for the kernel's locks
// on the inode or its directory, which a FUSE request being served may
// hold: the watcher's are only ever sent by its notifier goroutine, never
// by a request handler (flushWriters, writers.go, is the one notification
// sent while a request is served, of a file's data). The reader goroutine
// only reads, filters and queues, so that the kernel's event queue is
// drained even while notifications wait. The queue is deduplicated and
// bounded; when it (or the kernel's queue) overflows, everything the
// kernel may cache is invalidated: every name of every node in clamfuse's
// tree, and the names clamfuse has dropped from its tree since the last
// batch because they lead elsewhere now (forgotten), which the kernel may
// still cache, their own invalidation lost.
//
// A name is expired (FUSE_EXPIRE_ONLY) only while it leads to the node
// the kernel was given for it: the kernel then asks again (LOOKUP) at
// its next use, and keeps the entry, with what is mounted on it, when
// the answer is the same node. A name known to lead elsewhere now, or
// nowhere (one just created, removed or renamed, one dropped from the
// tree, a name of a node in the tree that no longer leads to it), is
// invalidated: the kernel unhashes the entry. An expiry is not enough
// there: the kernel revalidates an expired entry without any lock a
// notification waits for, so a LOOKUP answered before the change (it
// names the entry's own node) and applied after the expiry makes the
// stale entry valid again for the whole WatchedValid, and nothing would
// expire it again (TestWatchOverflowRace caught this about one run in
// ten); an entry unhashed is never found again, whatever a LOOKUP in
// flight brings back (TestEntryNotifiedDuringRevalidation, fusefs). (The
// kernel would unhash such an entry itself at its next revalidation, the
// answer naming another node; only a name changed and changed back
// before the notification loses an entry it would have kept.) A name
// that now leads to a directory the kernel may know is only
// expired, its entry being likely that directory's, with what is
// mounted on it and the processes working in it (an unhashed directory
// is no working directory getcwd can name): a directory replaced by
// another while a revalidation of its name is in flight may stay stale.
//
// A LOOKUP or READDIRPLUS answered while a batch was taken may have
// recorded its name after that batch looked at the tree: it checks the
// name again, and a name changed since gets no time of validity
// (FS.settled).

// defaultWatchQueue bounds the pending invalidations (distinct names and
// nodes) before the watcher gives up on them and invalidates everything.
const defaultWatchQueue = 1 << 16

// watchedFS is one backing filesystem (st_dev) met beneath the source.
type watchedFS struct {
	ok    bool    // marked: its changes are reported
	fsid  [8]byte // f_fsid, as fanotify reports it
	fd    int     // descriptor of a directory on it, for open_by_handle_at; -1 if !ok
	why   string  // why it is not watched, when !ok
	first string  // path of the first directory met on it, for logs
}

// entryKey is a name in a directory.
type entryKey struct {
	dir  *Node
	name string
}

// childFID is a non-directory known only by its file handle: the target
// of a removal or of a rename away, whose name no longer leads to it.
type childFID struct {
	dev    uint64 // the filesystem, a key of watcher.devs
	handle string // handle type and bytes, as handleKey encodes them
}

// invalidator sends the watcher's notifications: a *fusefs.Server, or a
// recorder in tests.
type invalidator interface {
	InvalidateNodeAttr(n fusefs.Node) error
	InvalidateNodeData(n fusefs.Node) error
	InvalidateEntry(parent fusefs.Node, name string) error
	ExpireEntry(parent fusefs.Node, name string) error
}

// watcher turns changes in the backing directory into FUSE notifications.
// A nil *watcher does nothing (no mount, or tests of FS alone).
type watcher struct {
	fsys       *FS
	srv        invalidator
	log        *slog.Logger
	expireOnly bool // the kernel has FUSE_EXPIRE_ONLY: expire names that lead where they did, do not drop them
	pid        int32

	fan         *os.File // the fanotify group (a blocking descriptor, outside Go's poller), nil when not watching
	stopFD      int      // an eventfd that wakes the reader at stop, with fan
	fanMask     uint64
	handleFlags int // name_to_handle_at flags matching fanotify's handles

	devMu sync.Mutex                            // serializes marking; guards writes of devs
	devs  atomic.Pointer[map[uint64]*watchedFS] // copy-on-write: read on every GETATTR

	dirMu    sync.Mutex                    // guards byHandle, byNode, pruneAt
	byHandle map[string]weak.Pointer[Node] // fsid+handle -> directory node
	byNode   map[weak.Pointer[Node]]string // registered directories -> their key
	pruneAt  int

	qMu      sync.Mutex // guards the pending work below
	entries  map[entryKey]struct{}
	attrs    map[*Node]struct{}
	children map[entryKey]struct{} // names whose node's attributes changed
	fids     map[childFID]struct{}
	nodes    map[*Node]struct{} // changed by clamfuse itself: attributes and every name
	refresh  map[*Node]struct{} // attributes to refresh after the invalidations (queueRefresh)
	broad    string             // why everything must be invalidated, or ""
	limit    int
	// forgot holds names clamfuse dropped from its tree (forgotten):
	// kept apart from the rest, since invalidating everything goes by
	// the tree and would not reach them; an overflow does not clear it.
	forgot map[entryKey]struct{}

	wake chan struct{} // a token when work is pending
	done chan struct{} // closed by stop
	wg   sync.WaitGroup

	overflowed atomic.Int64  // times everything was invalidated
	taken      atomic.Uint64 // batches taken (FS.settled)

	g           *guard // sends the notifications (notifyguard.go)
	stallLogged warned // the last stalled notification logged at WARN (stalled)
}

// newWatcher starts invalidation for fsys served by srv on conn: the
// notifier always (clamfuse's own changes), fanotify when watch is set
// and the backing filesystem allows it. queue bounds the pending work (0
// for the default).
func newWatcher(fsys *FS, srv *fusefs.Server, conn *fuse.Conn, watch bool, queue int) *watcher {
	if queue <= 0 {
		queue = defaultWatchQueue
	}
	w := &watcher{
		fsys:       fsys,
		srv:        srv,
		log:        fsys.log,
		expireOnly: conn.Features2()&fuse.InitHasExpireOnly != 0,
		pid:        int32(os.Getpid()),
		byHandle:   map[string]weak.Pointer[Node]{},
		byNode:     map[weak.Pointer[Node]]string{},
		pruneAt:    1024,
		limit:      queue,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	w.g = newGuard(w.signal, w.stalled)
	empty := map[uint64]*watchedFS{}
	w.devs.Store(&empty)
	w.resetQueue()
	w.forgot = map[entryKey]struct{}{}
	if watch {
		if err := w.startFanotify(); err != nil {
			w.log.Info("changes made directly in the backing directory show through the mount within mount.attr_timeout: they cannot be watched",
				"attr_timeout", fsys.opts.AttrValid, "reason", err.Error())
		} else {
			w.log.Info("watching the backing filesystem: changes made directly in the backing directory show through the mount at once",
				"watched_attr_timeout", fsys.opts.WatchedValid, "expire_only", w.expireOnly)
		}
	}
	w.wg.Add(1)
	go w.notifier()
	if w.fan != nil {
		w.wg.Add(1)
		go w.reader()
	}
	return w
}

// stop ends both goroutines and releases the fanotify group.
func (w *watcher) stop() {
	if w == nil {
		return
	}
	close(w.done)
	if w.fan != nil {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(w.stopFD, one[:]) // wakes the reader
	}
	w.wg.Wait()
	if w.fan != nil {
		w.fan.Close()
		unix.Close(w.stopFD)
	}
	for _, d := range *w.devs.Load() {
		if d.fd >= 0 {
			unix.Close(d.fd)
		}
	}
}

// watching reports whether the fanotify group runs.
func (w *watcher) watching() bool { return w != nil && w.fan != nil }

// covers reports whether changes on the filesystem dev are reported.
func (w *watcher) covers(dev uint64) bool {
	if w == nil || w.fan == nil {
		return false
	}
	d := (*w.devs.Load())[dev]
	return d != nil && d.ok
}

// attrValid is how long the kernel may trust the attributes st.
func (f *FS) attrValid(st *unix.Stat_t) time.Duration {
	if f.watch.covers(st.Dev) && (st.Nlink <= 1 || st.Mode&unix.S_IFMT == unix.S_IFDIR) {
		return f.opts.WatchedValid
	}
	return f.opts.AttrValid
}

// entryValid is how long the kernel may trust a name in the directory dir.
func (f *FS) entryValid(dir *Node) time.Duration {
	if f.watch.covers(dir.id.dev) {
		return f.opts.WatchedValid
	}
	return f.opts.EntryValid
}

// batchesTaken is how many batches the notifier has taken (0 without a
// watcher): read before a name is looked up, for FS.settled.
func (w *watcher) batchesTaken() uint64 {
	if w == nil {
		return 0
	}
	return w.taken.Load()
}

// settled reports whether the kernel may be given name in dir (open at
// dirfd) for the node n it was just found to lead to and recorded for
// (FS.node) with its time of validity. seq is batchesTaken, read before
// the name was looked up. A batch taken since may have looked at the tree
// before the name was recorded, and so not invalidated it after a change
// (invalidateAll goes by the tree): the name is looked at again, and if it
// leads elsewhere now it is dropped and gets no time of validity. A batch
// taken later finds the name in the tree.
func (f *FS) settled(seq uint64, dirfd int, dir *Node, name string, n *Node) bool {
	if f.watch.batchesTaken() == seq {
		return true
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && n.isInode(&st) {
		return true
	}
	n.dropStaleLink(dir, name)
	return false
}

// register records the directory n, just found as name in dirfd ("" for
// the root, dirfd then being the root itself), by its file handle, so
// that changes in it reach the kernel; the first directory met on another
// filesystem gets that filesystem marked. It is called for every
// directory node handed to the kernel, before its attributes are taken,
// and does nothing for one already registered.
func (w *watcher) register(n *Node, dirfd int, name string) {
	if w == nil || w.fan == nil || n.typ != unix.S_IFDIR {
		return
	}
	if d := (*w.devs.Load())[n.id.dev]; d != nil && !d.ok {
		return // a filesystem that cannot be watched
	}
	wp := weak.Make(n)
	w.dirMu.Lock()
	_, done := w.byNode[wp]
	w.dirMu.Unlock()
	if done {
		return
	}
	fd := dirfd
	if name != "" {
		var err error
		fd, err = unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return // gone already; its parent's events say so
		}
		defer unix.Close(fd)
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || (inoKey{st.Dev, st.Ino}) != n.id {
		return // replaced already; its parent's events say so
	}
	d := w.filesystem(fd, &st, n)
	if !d.ok {
		return
	}
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH|w.handleFlags)
	if err != nil {
		w.log.Debug("no file handle for a directory: its changes are not seen", "path", n.RelPath(), "err", err)
		return
	}
	key := handleKey(d.fsid[:], uint32(h.Type()), h.Bytes())
	w.dirMu.Lock()
	defer w.dirMu.Unlock()
	w.byHandle[key] = wp
	w.byNode[wp] = key
	if len(w.byNode) >= w.pruneAt {
		w.pruneLocked()
	}
}

// pruneLocked forgets the directories whose nodes are gone.
func (w *watcher) pruneLocked() {
	for wp, key := range w.byNode {
		if wp.Value() == nil {
			delete(w.byNode, wp)
			if w.byHandle[key] == wp {
				delete(w.byHandle, key)
			}
		}
	}
	w.pruneAt = max(1024, 2*len(w.byNode))
}

// dirByHandle returns the registered directory with the key handleKey
// gives, or nil.
func (w *watcher) dirByHandle(key []byte) *Node {
	w.dirMu.Lock()
	wp, ok := w.byHandle[string(key)]
	w.dirMu.Unlock()
	if !ok {
		return nil
	}
	return wp.Value()
}

// handleKey is the map key of a file handle on the filesystem fsid.
func handleKey(fsid []byte, typ uint32, handle []byte) string {
	b := make([]byte, 0, 12+len(handle))
	b = append(b, fsid...)
	b = append(b, byte(typ), byte(typ>>8), byte(typ>>16), byte(typ>>24))
	b = append(b, handle...)
	return string(b)
}

// filesystem returns what is known of the filesystem of st (fd is a
// descriptor on it), marking it first if it is new. n names it in logs.
func (w *watcher) filesystem(fd int, st *unix.Stat_t, n *Node) *watchedFS {
	if d := (*w.devs.Load())[st.Dev]; d != nil {
		return d
	}
	w.devMu.Lock()
	defer w.devMu.Unlock()
	old := *w.devs.Load()
	if d := old[st.Dev]; d != nil {
		return d
	}
	d := w.mark(fd)
	d.first = n.RelPath()
	if !d.ok && len(old) > 0 {
		w.log.Info("a filesystem beneath the source cannot be watched: changes made there directly show through the mount within mount.attr_timeout",
			"path", "/"+d.first, "dev", st.Dev, "attr_timeout", w.fsys.opts.AttrValid, "reason", d.why)
	} else if len(old) > 0 {
		w.log.Debug("watching another filesystem beneath the source", "path", "/"+d.first, "dev", st.Dev)
	}
	next := make(map[uint64]*watchedFS, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[st.Dev] = d
	w.devs.Store(&next)
	return d
}

// changed queues the invalidation of n's attributes and every name of it,
// after clamfuse itself changed it (moved it to the quarantine): the
// kernel does not know. Safe to call from a request handler: it only
// queues.
func (w *watcher) changed(n *Node) {
	if w == nil {
		return
	}
	w.qMu.Lock()
	if w.broad == "" {
		w.nodes[n] = struct{}{}
		w.overflowLocked()
	}
	w.qMu.Unlock()
	w.signal()
}

// forgotten queues the expiry of name in dir, a name that clamfuse has
// found to lead elsewhere than the node it handed out for it, or nowhere,
// and dropped from its tree (Node.dropStaleLink): the kernel may cache it
// still (its invalidation lost to an overflow, or not yet passed on), and
// invalidateAll, which goes by the tree, would not reach it. Safe to call
// from a request handler: it only queues.
func (w *watcher) forgotten(dir *Node, name string) {
	if w == nil || w.fan == nil {
		return // names are trusted for attr_timeout only
	}
	w.qMu.Lock()
	w.forgot[entryKey{dir, name}] = struct{}{}
	w.qMu.Unlock()
	w.signal()
}

// queueEntry queues a name created, removed or renamed in dir.
func (w *watcher) queueEntry(dir *Node, name string) {
	w.qMu.Lock()
	if w.broad == "" {
		w.entries[entryKey{dir, name}] = struct{}{}
		w.attrs[dir] = struct{}{}
		w.overflowLocked()
	}
	w.qMu.Unlock()
}

// queueChild queues the attributes of whatever name is in dir.
func (w *watcher) queueChild(dir *Node, name string) {
	w.qMu.Lock()
	if w.broad == "" {
		w.children[entryKey{dir, name}] = struct{}{}
		w.overflowLocked()
	}
	w.qMu.Unlock()
}

// queueAttr queues the attributes of n.
func (w *watcher) queueAttr(n *Node) {
	w.qMu.Lock()
	if w.broad == "" {
		w.attrs[n] = struct{}{}
		w.overflowLocked()
	}
	w.qMu.Unlock()
}

// queueFID queues the attributes of the non-directory with this handle.
func (w *watcher) queueFID(c childFID) {
	w.qMu.Lock()
	if w.broad == "" {
		w.fids[c] = struct{}{}
		w.overflowLocked()
	}
	w.qMu.Unlock()
}

// queueRefresh has the notifier refresh the kernel's attributes of n
// (FS.refreshAttr) after it sent the invalidations pending now and those
// queued with it: a file just written through the mount, whose writes
// (by the writer's process, in passthrough mode) the watcher reports as
// changes behind the mount; an invalidation for them sent after the
// refresh would mark the attributes stale again for the next reader
// (stock.go). It reports false, and queues nothing, when no filesystem
// is watched.
func (w *watcher) queueRefresh(n *Node) bool {
	if !w.watching() {
		return false
	}
	w.qMu.Lock()
	if w.broad == "" {
		w.refresh[n] = struct{}{}
		w.overflowLocked()
	}
	w.qMu.Unlock()
	w.signal()
	return true
}

// queueAll gives up on precise invalidation: everything goes.
func (w *watcher) queueAll(why string) {
	w.qMu.Lock()
	if w.broad == "" {
		w.broad = why
		w.clearQueueLocked()
	}
	w.qMu.Unlock()
	w.signal()
}

func (w *watcher) overflowLocked() {
	if len(w.entries)+len(w.attrs)+len(w.children)+len(w.fids)+len(w.nodes)+len(w.refresh) > w.limit {
		w.broad = "the queue of pending invalidations is full"
		w.clearQueueLocked()
	}
}

func (w *watcher) clearQueueLocked() {
	clear(w.entries)
	clear(w.attrs)
	clear(w.children)
	clear(w.fids)
	clear(w.nodes)
	clear(w.refresh)
}

func (w *watcher) resetQueue() {
	w.entries = map[entryKey]struct{}{}
	w.attrs = map[*Node]struct{}{}
	w.children = map[entryKey]struct{}{}
	w.fids = map[childFID]struct{}{}
	w.nodes = map[*Node]struct{}{}
	w.refresh = map[*Node]struct{}{}
}

// signal wakes the notifier.
func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// batch is the pending work, taken at once.
type batch struct {
	entries  map[entryKey]struct{}
	attrs    map[*Node]struct{}
	children map[entryKey]struct{}
	fids     map[childFID]struct{}
	nodes    map[*Node]struct{}
	refresh  map[*Node]struct{}
	broad    string
	forgot   map[entryKey]struct{}
}

func (w *watcher) take() batch {
	w.qMu.Lock()
	defer w.qMu.Unlock()
	b := batch{w.entries, w.attrs, w.children, w.fids, w.nodes, w.refresh, w.broad, w.forgot}
	w.taken.Add(1)
	w.broad = ""
	w.resetQueue()
	w.forgot = map[entryKey]struct{}{}
	return b
}

// notifier sends the notifications, one batch at a time, after those
// put aside behind a stalled one that was sent since (notifyguard.go).
func (w *watcher) notifier() {
	defer w.wg.Done()
	defer w.g.stop()
	for {
		select {
		case <-w.done:
			return
		case <-w.wake:
		}
		back, dropped := w.g.takeBack()
		if dropped {
			w.queueAll("notifications waiting behind one stalled by a kernel lock were too many")
		}
		for _, b := range back {
			for _, f := range b.fs {
				w.g.do(b.key, f)
			}
		}
		w.send(w.take())
	}
}

// stalled logs a notification of n left waiting for a kernel lock: at
// WARN the first of each minute, at DEBUG the others, counted in the
// next WARN (a user can cause them at will). Only the notifier calls it.
func (w *watcher) stalled(n *Node) {
	const msg = "a notification to the kernel waits for a lock another process holds (a directory being listed into memory that does not come, as from a FUSE filesystem that does not answer); the others go on, and those of this node once it is sent"
	args := []any{"path", n.RelPath(), "node", n.id.ino, "waited", stallAfter, "waiting", w.g.waiting()}
	if now := time.Now(); now.Sub(w.stallLogged.at) >= quotaLogInterval {
		w.log.Warn(msg, append(args, "not_logged", w.stallLogged.missed)...)
		w.stallLogged = warned{at: now}
		return
	}
	w.stallLogged.missed++
	w.log.Debug(msg, args...)
}

// send sends the notifications of the batch b.
func (w *watcher) send(b batch) {
	for k := range b.forgot {
		w.changedName(k.dir, k.name)
	}
	if b.broad != "" {
		w.invalidateAll(b.broad)
		return
	}
	for n := range b.nodes {
		w.attr(n)
		for _, l := range n.linksSnapshot() {
			w.link(n, l)
			w.attr(l.parent)
		}
	}
	for k := range b.entries {
		// The name may now lead to a node the kernel has under
		// another name (a rename, a hard link): its link count
		// and change time moved.
		if c := w.changedName(k.dir, k.name); c != nil {
			w.attr(c)
		}
	}
	for k := range b.children {
		if c := w.child(k.dir, k.name); c != nil {
			w.attr(c)
		}
	}
	for c := range b.fids {
		if n := w.byFID(c); n != nil {
			w.attr(n)
		}
	}
	for n := range b.attrs {
		w.attr(n)
	}
	// Last: a stat through the mount each, served by the request loop
	// (FS.refreshAttr); no invalidation of this batch comes after.
	for n := range b.refresh {
		w.g.do(n, func() { w.fsys.refreshAttr(n) })
	}
}

// child returns the node of the inode name now leads to in dir, if the
// kernel may know it.
func (w *watcher) child(dir *Node, name string) *Node {
	fd, release, err := dir.pathFD()
	if err != nil {
		return nil
	}
	defer release()
	var st unix.Stat_t
	if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return nil
	}
	if k := (inoKey{st.Dev, st.Ino}); k == w.fsys.rootN.id {
		return w.fsys.rootN
	}
	return w.fsys.lookupID(&st)
}

// byFID returns the node of the non-directory with the handle c, if the
// kernel may know it and it still exists.
func (w *watcher) byFID(c childFID) *Node {
	d := (*w.devs.Load())[c.dev]
	if d == nil || !d.ok || len(c.handle) < 4 {
		return nil
	}
	typ := int32(uint32(c.handle[0]) | uint32(c.handle[1])<<8 | uint32(c.handle[2])<<16 | uint32(c.handle[3])<<24)
	fd, err := unix.OpenByHandleAt(d.fd, unix.NewFileHandle(typ, []byte(c.handle[4:])), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return nil // gone for good (ESTALE), or no CAP_DAC_READ_SEARCH
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return nil
	}
	return w.fsys.lookupID(&st)
}

// attr invalidates the kernel's attributes (and cached ACLs) of n, and
// for a directory its cached listing too (opens of a watched directory
// let the kernel keep it: FOPEN_CACHE_DIR, file.go). Every change of a
// directory's entries queues its attributes (queueEntry), and so does
// every way of giving up on precise invalidation (invalidateAll).
func (w *watcher) attr(n *Node) {
	if n.typ == unix.S_IFDIR {
		w.g.do(n, func() { w.result("listing", n, "", w.srv.InvalidateNodeData(n)) })
		return
	}
	w.g.do(n, func() { w.result("attributes", n, "", w.srv.InvalidateNodeAttr(n)) })
}

// expire makes the kernel look name in dir up again at its next use,
// keeping the entry (and what is mounted on it) if it leads to the same
// node. Only for a name that leads to the node the kernel was given for
// it, or to a directory (see the top of this file).
func (w *watcher) expire(dir *Node, name string) {
	w.g.do(dir, func() {
		var err error
		if w.expireOnly {
			err = w.srv.ExpireEntry(dir, name)
		} else {
			err = w.srv.InvalidateEntry(dir, name)
		}
		w.result("entry", dir, name, err)
	})
}

// changedName makes the kernel drop its entry of name in dir, a name
// that may lead elsewhere now than the node the kernel has for it; but
// only expires it if it leads to a directory the kernel may know (see
// the top of this file). It returns the node name leads to, if the
// kernel may know it.
func (w *watcher) changedName(dir *Node, name string) *Node {
	c := w.child(dir, name)
	if c != nil && c.typ == unix.S_IFDIR {
		w.expire(dir, name)
	} else {
		w.g.do(dir, func() { w.result("entry", dir, name, w.srv.InvalidateEntry(dir, name)) })
	}
	return c
}

// link expires the name l of n if it still leads to n; else drops it
// from n's names, and from the kernel (changedName).
func (w *watcher) link(n *Node, l link) {
	if w.leadsTo(l.parent, l.name, n) {
		w.expire(l.parent, l.name)
		return
	}
	n.dropLink(l.parent, l.name)
	w.changedName(l.parent, l.name)
}

// leadsTo reports whether name in dir leads to n's inode now.
func (w *watcher) leadsTo(dir *Node, name string, n *Node) bool {
	fd, release, err := dir.pathFD()
	if err != nil {
		return false
	}
	defer release()
	var st unix.Stat_t
	if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return false
	}
	return n.isInode(&st)
}

// result logs what a notification failed for, but for the kernel not
// having cached the thing (ENOENT) and the mount being gone.
func (w *watcher) result(what string, n *Node, name string, err error) {
	switch err {
	case nil, fuse.ErrNotCached, syscall.ENOENT, syscall.ENODEV, syscall.EBADF, syscall.ENOTCONN, syscall.ECONNABORTED:
		return
	}
	w.log.Debug("invalidation failed", "what", what, "node", n.id.ino, "name", name, "err", err)
}

// invalidateAll invalidates the attributes and every name of every node
// the kernel may know, after events were lost.
func (w *watcher) invalidateAll(why string) {
	if w.overflowed.Add(1) == 1 {
		w.log.Warn("changes in the backing directory came faster than they could be passed on; invalidating every cached name and attribute (logged once)",
			"reason", why)
	} else {
		w.log.Debug("invalidating every cached name and attribute", "reason", why)
	}
	start := time.Now()
	nodes := w.fsys.snapshot()
	for _, n := range nodes {
		select {
		case <-w.done:
			return
		default:
		}
		w.attr(n.node)
		for _, l := range n.links {
			w.link(n.node, l)
		}
	}
	w.log.Debug("invalidated every cached name and attribute", "nodes", len(nodes), "took", time.Since(start))
}

// nodeLinks is a node and its names, as snapshot took them.
type nodeLinks struct {
	node  *Node
	links []link
}

// snapshot returns every live node (the root first) with its names.
func (f *FS) snapshot() []nodeLinks {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	out := make([]nodeLinks, 0, f.nodes.len()+1)
	out = append(out, nodeLinks{node: f.rootN})
	for n := range f.nodes.all() {
		out = append(out, nodeLinks{n, n.links.slice()})
	}
	return out
}

// linksSnapshot returns a copy of n's names.
func (n *Node) linksSnapshot() []link {
	n.fsys.treeMu.Lock()
	defer n.fsys.treeMu.Unlock()
	return n.links.slice()
}
