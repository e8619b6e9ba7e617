package fs

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// The page cache of a file just written, stocked with the bytes judged.
//
// A file written through the mount leaves nothing in FUSE's page cache
// that an open may keep: a passthrough writer fills none (the kernel
// writes the backing file), and every writer's open drops the node's
// kept state (Node.keep). So the first open for reading after the write
// read the file through clamfuse again (one READ round trip for a small
// file), although the scan after the write (cache.Gate.Prescan) had just
// judged those very bytes and digested them (verify.go in cache).
//
// When that scan leaves a clean verdict with a digest of the contents
// (a file up to cache.verify_max_size, and under passthroughMinRead, so
// that its next open for reading is served in cached mode), the gate
// tells the filesystem (StockJudged), which reads the file's bytes
// through the gate's own descriptor into a buffer, checks that their
// digest is the one judged, and, only if so, puts exactly those bytes
// in the kernel's page cache of the node (FUSE_NOTIFY_STORE), after
// dropping whatever it held (FUSE_NOTIFY_INVAL_INODE), and records the
// state judged as the one the page cache holds (Node.keep). The next
// open keeps the page cache (FOPEN_KEEP_CACHE) only if the gate then
// finds the file in that very state, contents digest included
// (Node.keepCache); otherwise the kernel drops it at that open. So a
// reader is served from it only bytes clamd judged, of the state its own
// open was decided on.
//
// The store is made under Node.hmu, and only while the node has no
// handle at all and no open has been decided since its last writer
// (Node.keep is 0; every open for writing sets it to 0, and every open
// decided sets it to its own state): no open can register meanwhile,
// none can read or map the file, so no byte a reader or writer put in
// the page cache (a dirty page of a shared mapping above all) is
// overwritten, and no open that was told to drop the page cache reads
// the stored bytes instead of its own state's. A change between the read
// and the store (behind the mount, or a writer's open and release)
// changes the state the next open finds (its times, its contents'
// digest, or the write generation in the key), which then does not keep
// the page cache.
//
// Every write through the mount also marks the size and times the kernel
// holds stale, and the reader's fstat would ask for them (a GETATTR): a
// stored file's attributes are refreshed right after, in the background
// (refreshAttr). The kernel keeps the stored pages at that GETATTR: the
// mount asks neither FUSE_AUTO_INVAL_DATA (which drops the page cache
// when the mtime the kernel knew changes) nor FUSE_EXPLICIT_INVAL_DATA;
// it drops it when the size it knew changes, as after a change behind
// the mount.

// stockMax bounds the stores running at once: each holds a buffer of up
// to passthroughMinRead bytes.
const stockMax = 2

var _ cache.Stocker = (*FS)(nil)

// StockJudged puts the contents of the file src, judged clean in state k
// with digest sum, in the kernel's page cache of its node, if they are
// still the bytes judged, and then refreshes its attributes (see above).
// src is the gate's descriptor, which it does not keep.
func (f *FS) StockJudged(src *os.File, k cache.Key, sum uint64) {
	if f.srv == nil || sum == 0 || k.Size <= 0 || k.Size >= passthroughMinRead {
		return
	}
	f.treeMu.Lock()
	n := f.nodes.get(inoKey{k.Dev, k.Ino})
	f.treeMu.Unlock()
	if n == nil || n.typ != unix.S_IFREG || !n.stockable() {
		return
	}
	f.stocking <- struct{}{}
	defer func() { <-f.stocking }()
	b := fuse.NewStoreBuffer(int(k.Size))
	defer b.Free()
	data := b.Data()
	// A file that grew is not the state judged; the digest catches any
	// other change.
	if got, err := src.ReadAt(data, 0); err != nil || got != len(data) || !atEOF(src, k.Size) {
		return
	}
	d := cache.NewDigest()
	d.Write(data)
	if d.Sum() != sum {
		return
	}
	stored, err := n.stock(b, stateDigest(k, sum))
	if err != nil {
		f.log.Debug("storing the judged contents in the page cache failed", "path", n.RelPath(), "err", err)
	}
	if stored {
		f.refreshSoon(n)
	}
}

// refreshDelay is how long a refresh of the attributes of a file just
// written waits before it is queued to the watcher: the watcher's reader
// reads the events of the writes within readPause (and the time to be
// scheduled), and their invalidations must come before the refresh.
const refreshDelay = 2*readPause + time.Millisecond

// refreshSoon refreshes the kernel's attributes of n (refreshAttr): at
// once where no filesystem is watched, else through the watcher's
// notifier, after the invalidations of the events the writes caused
// (watcher.queueRefresh). One that comes later still makes the reader's
// fstat ask (a GETATTR), no more.
func (f *FS) refreshSoon(n *Node) {
	if !f.watch.watching() {
		f.refreshAttr(n)
		return
	}
	time.AfterFunc(refreshDelay, func() {
		if !f.watch.queueRefresh(n) {
			f.refreshAttr(n)
		}
	})
}

// refreshAttr has the kernel ask clamfuse for n's attributes now, with a
// stat of n's path through the mount, in the background of the scan after
// the write: every write through the mount marks the size and times the
// kernel holds stale (fuse_write_update_attr), and the next stat of the
// file, a reader's fstat as cat makes at its open, would wait for that
// GETATTR round trip (see README, Performance). Only a reply that
// carries the file's attributes makes the kernel trust them again; no
// notification does. The stat is clamfuse's own request, served like any
// other (as root, who may search every directory; it reads no file), by
// the request loop, while the goroutine that makes it holds no lock. The
// mount's root is found from the mountpoint's parent, checked to be this
// mount's (mountRef.root), and the path is resolved beneath it and never
// leaves it: no symlink followed, no other mount crossed (openat2), so
// that a user who swaps a directory for a symlink to a mount of their own
// that never answers, or mounts one on the mountpoint or on a directory
// of its path, cannot hold up the goroutine (the watcher's notifier). A
// name renamed meanwhile costs a stat of whatever it names now, no more.
// Where the backing filesystem is watched, the notifier makes it
// (watcher.queueRefresh), after the invalidations the writes caused.
func (f *FS) refreshAttr(n *Node) {
	defer f.stocked.Add(1)
	f.treeMu.Lock()
	rel, ok := n.relPathLocked()
	f.treeMu.Unlock()
	if !ok || rel == "" {
		return
	}
	root, err := f.mnt.root()
	if err != nil {
		return
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV})
	if err != nil {
		return
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	_ = unix.Fstat(fd, &st) // the GETATTR
}

// mountRef finds the root of a mount again, for clamfuse's own requests
// through it (refreshAttr), with no path walk from the root of the
// namespace: a user may mount a filesystem of their own (fusermount3) on
// a directory they own, and one on a directory of the mountpoint's path,
// or on the mountpoint itself, that never answers would hold up any walk
// into it. So the mountpoint's parent directory is opened once, before
// the mount, and kept (it does not keep the mount busy at unmount); the
// root is the topmost mount on the mountpoint's name there, and only if
// it is this mount (its device, learnt at Mount). After the unmount, or
// with another mount on top, there is none.
type mountRef struct {
	mu   sync.RWMutex // guards dir
	dir  int          // O_PATH descriptor of the mountpoint's parent; -1 once closed
	name string       // the mountpoint's name in dir
	dev  device       // the mount's device
}

// newMountRef opens the parent of target (absolute and clean, see
// CheckPaths), before target is mounted.
func newMountRef(target string) (*mountRef, error) {
	dir, err := unix.Open(filepath.Dir(target), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &mountRef{dir: dir, name: filepath.Base(target)}, nil
}

// learn records the device of the mount now topmost on the mountpoint:
// called right after the mount (deviceAt asks nothing of the server).
func (r *mountRef) learn() (err error) {
	r.dev, err = deviceAt(r.dir, r.name)
	return err
}

// root opens the mount's root (O_PATH), or fails: closed, not mounted
// any more, or hidden under another mount. A nil r has none.
func (r *mountRef) root() (int, error) {
	if r == nil {
		return -1, syscall.ENOENT
	}
	r.mu.RLock()
	if r.dir < 0 {
		r.mu.RUnlock()
		return -1, syscall.EBADF
	}
	fd, err := unix.Openat2(r.dir, r.name, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
	r.mu.RUnlock()
	if err != nil {
		return -1, err
	}
	dev, err := deviceAt(fd, "")
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	if dev != r.dev {
		unix.Close(fd)
		return -1, syscall.EXDEV
	}
	return fd, nil
}

// close lets go of the parent's descriptor, once serving has ended.
func (r *mountRef) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dir >= 0 {
		unix.Close(r.dir)
		r.dir = -1
	}
}

// atEOF reports whether src holds no byte at size.
func atEOF(src *os.File, size int64) bool {
	var one [1]byte
	k, err := src.ReadAt(one[:], size)
	return k == 0 && err != nil
}

// stockable reports whether n's page cache may be stocked now (see
// stock); a cheap look before reading the file.
func (n *Node) stockable() bool {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	return n.stockableLocked()
}

// stockableLocked: no handle, none whose bytes served are being checked,
// no open decided since the last writer's, still known to the kernel.
// hmu is held.
func (n *Node) stockableLocked() bool {
	return !n.forgotten && n.keep == 0 && n.handlesLocked().len() == 0 && n.readingLocked() == 0
}

// stock puts b's data, the contents of state keep (stateDigest), checked,
// in n's page cache, from offset 0, in place of whatever it held, and
// records keep as what the page cache holds (see above); it reports
// whether it did. A node the kernel does not know (any more) is no
// error.
func (n *Node) stock(b *fuse.StoreBuffer, keep uint64) (bool, error) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if !n.stockableLocked() {
		return false, nil
	}
	err := n.storeLocked(b)
	if err == nil {
		n.keep = keep
	}
	if err == fuse.ErrNotCached {
		err = nil
	}
	return n.keep == keep, err
}

// storeLocked puts b's data in n's page cache, from offset 0, in place of
// whatever it held; the caller checked that it may (stockableLocked), and
// records the state stored (Node.keep) if it succeeds. hmu is held.
func (n *Node) storeLocked(b *fuse.StoreBuffer) error {
	srv := n.fsys.srv
	// Whatever the page cache held goes first, beyond the stored bytes
	// too: the page cache then holds those bytes alone. A node that never
	// had a handle nor a store has an empty page cache: the kernel fills
	// it only through opens (and this store). The invalidation is then
	// left out, since it also drops the attributes the kernel holds (the
	// reader's fstat would ask for them: a GETATTR round trip).
	var err error
	if n.paged {
		err = srv.InvalidateNodeData(n)
	}
	n.paged = true
	if err == nil {
		err = srv.NotifyStoreBuffer(n, 0, b)
	}
	return err
}

var _ cache.Holder = (*Handle)(nil)

// Hold gives the open's own scan a buffer of size bytes for the contents
// it judges (cache.Opener.Into), the store of a first open: when the scan
// judged exactly the bytes it holds (cache.Decision.Held), the open stores
// them in the kernel's page cache of the node before it answers, and
// answers FOPEN_KEEP_CACHE (keepCache), so the opener's reads need no READ
// round trip; under the same rules as the store after a write (above),
// made under hmu with the check that the node has no handle and no open
// decided since its last writer, so that no other open can see the page
// cache change under it. Only for a file served in cached mode (under
// passthroughMinRead) whose page cache may be stocked now; else nil, and
// the scan reads into a buffer of its own. The buffer goes back when the
// open is decided (freeJudged). At most holdMax such buffers exist at
// once: past that, an open's scan gets none (and its reader a READ), so
// that no number of opens at once can make them take more than holdMax
// times passthroughMinRead bytes.
func (h *Handle) Hold(size int64) []byte {
	if size <= 0 || size >= passthroughMinRead || !h.node.stockable() {
		h.freeJudged()
		return nil
	}
	if h.judged != nil && int64(len(h.judged.Data())) == size {
		return h.judged.Data()
	}
	h.freeJudged()
	select {
	case h.node.fsys.holding <- struct{}{}:
	default:
		return nil
	}
	h.judged = fuse.NewStoreBuffer(int(size))
	return h.judged.Data()
}

// holdMax bounds the buffers of judged contents held at once (Hold).
const holdMax = 8

// freeJudged gives back the buffer Hold gave, if any.
func (h *Handle) freeJudged() {
	if h.judged != nil {
		h.judged.Free()
		h.judged = nil
		<-h.node.fsys.holding
	}
}
