package fs

import (
	"context"
	"hash/maphash"
	"path"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// openNode is the gate of clamfuse: an open that can read a regular file
// is allowed only when the gate says the very descriptor that will serve
// the reads holds bytes judged clean. The backing file (or directory) is
// opened as the caller, so the backing filesystem checks the caller's
// permission (mode, ACLs) as it is now, at every open. (Open, in
// quota.go, calls it.)
func (n *Node) openNode(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	c := n.fsys.cred(&req.Header)
	if req.Dir {
		// A fresh descriptor (not O_PATH) that the handle owns, opened
		// through the directory's own descriptor: read permission on
		// it is what opendir needs, not search.
		pfd, release, err := n.dirFD(unix.O_PATH)
		if err != nil {
			return nil, errno(err)
		}
		fd, err := caller.Reopen(c, pfd, unix.O_RDONLY|unix.O_DIRECTORY)
		release()
		if err != nil {
			return nil, errno(err)
		}
		if n.fsys.watch.covers(n.id.dev) {
			// The kernel may keep the listing across opens (it still
			// sends every OPENDIR here, as the caller): the watcher drops
			// it at any change of the directory's entries made behind
			// the mount (watcher.attr), and the kernel itself at any
			// made through it.
			resp.Flags |= fuse.OpenCacheDir | fuse.OpenKeepCache
		}
		return newDirHandle(n.fsys, fd, req.Uid), nil
	}
	flags := backingFlags(req.Flags) &^ unix.O_TRUNC
	if n.fsys.opts.ReadOnly && flags&unix.O_ACCMODE != unix.O_RDONLY {
		return nil, errno(syscall.EROFS)
	}
	o := opened{noatime: flags&unix.O_ACCMODE != unix.O_WRONLY}
	fd, dirfd, name, release, err := n.openLinked(c, flags, &o)
	if err == syscall.ENOENT {
		// No name leads to this inode any more: replaced or removed
		// behind the kernel's back, or by a rename that raced this open.
		// While it is open, open it again through that descriptor, as a
		// local filesystem opens the inode its path walk found. Else
		// ESTALE makes the kernel look the path up again and retry,
		// and find the new file, or nothing.
		if hfd := n.handleFD(); hfd >= 0 {
			fd, err := reopenRegular(c, hfd, flags, &n.id)
			unix.Close(hfd)
			if err == nil {
				return n.gate(ctx, fd, flags, &req.Header, resp, nil, nil)
			}
		}
		if fd, err := n.openOrphan(c, flags); err == nil {
			return n.gate(ctx, fd, flags, &req.Header, resp, nil, nil)
		}
		err = syscall.ESTALE
	}
	if err != nil {
		return nil, errno(err)
	}
	dir := &openDir{fd: dirfd, name: name, release: release}
	defer dir.done()
	return n.gate(ctx, fd, flags, &req.Header, resp, dir, &o)
}

// openDir is the directory an open found its file in, and the name
// there, where the actions on a detection (quarantine) find the file.
// The open holds the node's own descriptor of it while it is decided from
// the cache; before it waits (for a scan, which may take up to
// clamd.timeout) it keeps a copy of that descriptor and lets go of the
// node's (letGo). A cached open so makes neither the copy nor its close
// (issue #12: two system calls of each cached open).
type openDir struct {
	fd      int    // the directory; -1 when no copy could be made
	name    string // the file's name in it
	release func() // lets go of the node's descriptor fd; nil when not held here
	copied  bool   // fd is letGo's copy, closed by done
}

// letGo is called before the open waits: see openDir. Should the copy
// fail (no descriptor left), a detection's quarantine fails (the file
// stays in place) and the open is denied all the same.
func (d *openDir) letGo() {
	if d.release == nil {
		return
	}
	fd, err := unix.FcntlInt(uintptr(d.fd), unix.F_DUPFD_CLOEXEC, 0)
	d.release()
	d.release = nil
	d.fd, d.copied = fd, err == nil
	if err != nil {
		d.fd = -1
	}
}

// done lets go of the directory, held or copied.
func (d *openDir) done() {
	if d.release != nil {
		d.release()
		d.release = nil
	}
	if d.copied {
		unix.Close(d.fd)
		d.copied = false
	}
}

// at is the directory and name for the actions (-1 and "" for none).
func (d *openDir) at() (int, string) {
	if d == nil {
		return -1, ""
	}
	return d.fd, d.name
}

// gate asks the gate about fd when the open can read, and wraps fd in a
// handle when allowed. It owns fd. fd was opened in dir, when not nil
// (see openDir), where the actions on an infected file (quarantine) find
// it; before the open waits for a verdict, dir lets go of the node's
// descriptor. o, when not nil,
// is what openRegular found of fd (see opened). While another process
// writes the file through the mount, see writers.go.
func (n *Node) gate(ctx context.Context, fd, flags int, hdr *fuse.Header, resp *fuse.OpenResponse, dir *openDir, o *opened) (*Handle, error) {
	rel := n.RelPath()
	f := osFile(fd, rel)
	who := cache.Opener{Path: rel, Pid: hdr.Pid, Uid: hdr.Uid}
	// What the check may take from the open itself; the handle keeps who
	// alone: the fstat is stale and the flags are put back after it.
	asked := who
	if o != nil {
		asked.Stat = &o.st
		asked.NoAtime = o.noatime || flags&unix.O_NOATIME != 0
		asked.ReadOnly = flags&unix.O_ACCMODE == unix.O_RDONLY
	}
	h := &Handle{node: n, f: f, who: who,
		readable: flags&unix.O_ACCMODE != unix.O_WRONLY, writable: flags&unix.O_ACCMODE != unix.O_RDONLY}
	deny := n.fsys.denyWhileWritten()
	if h.writable || deny {
		h.process() // now, while the opener surely lives
	}
	keep := false
	if h.readable && !n.excluded() {
		check := n.fsys.opts.Gate.Check
		defer h.freeJudged()
		if !h.writable && o != nil && n.fsys.srv != nil {
			// Its own scan may hand over the bytes it judged (stock.go).
			asked.Into = h
		}
		writers := n.otherWriters(h)
		if writers && deny && n.fsys.settleReleases() {
			writers = n.otherWriters(h)
		}
		if writers {
			if deny {
				f.Close()
				return nil, n.busy(h, true)
			}
			n.flushWriters()
			check, asked.Into = n.fsys.opts.Gate.CheckUncached, nil
		} else if n.writtenUnseen() {
			// The opener's own process writes it in passthrough mode:
			// no verdict made since that writer's open is sure.
			check, asked.Into = n.fsys.opts.Gate.CheckUncached, nil
		}
		wait := n.fsys.untilDying(ctx, hdr)
		if dir != nil {
			wait.dir = *dir // back once decided: no allocation for it
		}
		d := check(wait, f, asked)
		wait.end()
		if dir != nil {
			*dir = wait.dir
		}
		if !d.Allow {
			f.Close()
			if d.Reason == cache.ReasonInfected && n.fsys.opts.Actions != nil {
				dirfd, name := dir.at()
				n.fsys.opts.Actions.Infected(d, who, dirfd, name)
				// A quarantine moved it away behind the kernel's back.
				n.fsys.watch.changed(n)
			}
			return nil, denied(d)
		}
		if d.Reason == cache.ReasonAuditInfected && n.fsys.opts.Actions != nil {
			// Audit mode: the audit line and the command, never a
			// quarantine (cache/actions).
			n.fsys.opts.Actions.Infected(d, who, -1, "")
		}
		keep = d.Reason == cache.ReasonClean
		h.sum, h.size = d.Sum, d.Key.Size
		var judged *fuse.StoreBuffer
		if d.Held {
			judged = h.judged
		}
		if keep && n.keepCache(d.Key, d.Sum, judged) {
			// Same state as the last clean open, or stocked now with
			// the bytes this open's scan judged: the kernel's page cache
			// holds exactly the bytes judged clean; keep it.
			resp.Flags |= fuse.OpenKeepCache
		}
	}
	if o != nil && o.noatime {
		// The opener's own status flags, before anything reads through
		// fd for it (or the kernel does, in passthrough mode).
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags); err != nil {
			f.Close()
			return nil, errno(err)
		}
	}
	var conn *fuse.Conn
	if n.fsys.passthrough {
		conn = hdr.Conn
	}
	other := n.addHandle(h, deny, conn)
	if other != nil && n.fsys.settleReleases() {
		other = n.addHandle(h, deny, conn)
	}
	if other != nil {
		f.Close()
		return nil, n.busy(h, other.writable && h.readable)
	}
	if h.writable || !keep {
		n.dropKeepCache()
	}
	if h.backingID != 0 {
		h.passthroughOpen(resp)
	}
	return h, nil
}

// keepCache records that the kernel's page cache will hold the bytes of
// state k (contents sum, when verified) after this open, and reports
// whether it already did: only then may the open keep the cache
// (FOPEN_KEEP_CACHE). Any change to the file, through the mount or behind
// it, changes k or sum; and the bytes other opens served are checked
// (served.go). When it did not, and judged holds the contents this
// open's own scan judged (cache.Decision.Held), they are stored in the
// page cache first if it may be stocked now (see stock.go), and the open
// keeps it too.
func (n *Node) keepCache(k cache.Key, sum uint64, judged *fuse.StoreBuffer) bool {
	d := stateDigest(k, sum)
	n.hmu.Lock()
	defer n.hmu.Unlock()
	ok := n.keep == d && n.writersLocked() == 0 && n.readingLocked() == 0
	if !ok && judged != nil && sum != 0 && n.stockableLocked() {
		err := n.storeLocked(judged)
		if err != nil && err != fuse.ErrNotCached {
			n.fsys.log.Debug("storing the judged contents in the page cache failed", "path", n.RelPath(), "err", err)
		}
		ok = err == nil
	}
	n.keep = d
	return ok
}

// verifying counts handles whose bytes served are not checked yet.
func (n *Node) verifying(delta int32) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.stateLocked().reading += delta
	n.releaseStateLocked()
}

func (n *Node) dropKeepCache() {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.keep = 0
}

// digestSeed keys stateDigest, afresh in every process.
var digestSeed = maphash.MakeSeed()

// stateDigest stands for a file state and the digest of its contents
// (0 when not verified) in a Node (8 bytes instead of a cache.Key's 72,
// for every inode the kernel holds). It is never 0. The seed is random
// and never leaves the process, so two states share a digest by chance
// only, with probability 2^-64, and nobody can search for a pair that
// does.
func stateDigest(k cache.Key, sum uint64) uint64 {
	type state struct {
		k   cache.Key
		sum uint64
	}
	if d := maphash.Comparable(digestSeed, state{k, sum}); d != 0 {
		return d
	}
	return 1
}

// excluded reports whether opens of n skip the scan. The kernel does not
// say through which name a file is opened, so a file with several names
// (hard links) is excluded only when every name known for it is: else an
// infected file could be read through its plain name because it also has
// an excluded one.
func (n *Node) excluded() bool {
	n.fsys.treeMu.Lock()
	var paths []string
	for l := range n.links.all() {
		if p, ok := l.parent.relPathLocked(); ok {
			paths = append(paths, path.Join(p, l.name))
		}
	}
	n.fsys.treeMu.Unlock()
	for _, p := range paths {
		if !n.fsys.opts.Exclude(p) {
			return false
		}
	}
	return len(paths) > 0
}

// createNode makes and opens a new file as the caller. A new file is
// empty and needs no scan. If the name exists (made behind the kernel's
// back) and the request lacked O_EXCL, the existing file is opened as the
// caller, with the permission checks of any open, and the gate judges it
// like any open. (Create, in quota.go, calls it.)
func (n *Node) createNode(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fusefs.Node, fusefs.Handle, error) {
	if err := n.writable(); err != nil {
		return nil, nil, errno(err)
	}
	dirfd, release, err := n.dirFD(unix.O_PATH)
	if err != nil {
		return nil, nil, errno(err)
	}
	defer release()
	c := n.fsys.cred(&req.Header)
	flags := backingFlags(req.Flags)
	mode := newMode(dirfd, unixMode(req.Mode), unixMode(req.Umask))
	created := true
	var fd int
	for range 3 {
		created = true
		err = n.fsys.retryFull(func() (err error) {
			fd, err = caller.Openat(c, dirfd, req.Name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, mode)
			return err
		})
		if err != syscall.EEXIST || req.Flags&fuse.OpenFlags(unix.O_EXCL) != 0 {
			break
		}
		// Made behind the kernel's back: open what is there, if it
		// is a regular file (else ESTALE: the kernel looks it up and
		// retries, and follows a symlink itself).
		created = false
		fd, err = openRegularNow(c, dirfd, req.Name, flags, nil, nil)
		if err == syscall.ELOOP {
			err = syscall.ESTALE
		}
		if err != syscall.ENOENT {
			break
		}
		// Gone again in between: try to create it once more.
	}
	if err != nil {
		return nil, nil, errno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, errno(err)
	}
	child := n.fsys.node(dirfd, &st, n, req.Name)
	if !created && flags&unix.O_TRUNC != 0 {
		child.modified()
	}
	fillAttr(&resp.Attr, &st, n.fsys.attrValid(&st))
	resp.EntryValid = n.fsys.entryValid(n)
	h, err := child.gate(ctx, fd, flags, &req.Header, &resp.OpenResponse, &openDir{fd: dirfd, name: req.Name}, &opened{st: st})
	if err != nil {
		return nil, nil, err
	}
	return child, h, nil
}

// openLinked opens one of n's names as the caller c with flags, as
// openRegular does (o, when not nil, see opened), and returns the
// descriptor with that name and its directory, held until release. The
// open comes first, and its fstat shows whether the name still leads to
// n's inode; only when it does not, or the open fails, does an fstatat
// tell a name that leads elsewhere now (dropped, as at drops it, and the
// next name tried) from a failure of the open of n itself (its error).
// Opening first saves the fstatat that at made before every open (issue
// #12). What an open of a name swapped behind the kernel's back reaches
// is what the caller's own open of that name in the backing directory
// would: it is the caller's, never follows a symlink, never blocks
// (O_NONBLOCK), creates and truncates nothing, and its descriptor is
// closed unused unless it is n's regular file. ENOENT once no name is
// left.
func (n *Node) openLinked(c caller.Cred, flags int, o *opened) (fd, dirfd int, name string, release func(), err error) {
	noatime := o != nil && o.noatime
	for {
		l, found := n.firstLink()
		if !found {
			return -1, -1, "", nil, syscall.ENOENT
		}
		pfd, close, err := l.parent.pathFD()
		if err != nil {
			if err == syscall.ENOENT || err == syscall.ENOTDIR || err == syscall.ELOOP || err == syscall.EXDEV {
				n.dropStaleLink(l.parent, l.name)
				continue
			}
			return -1, -1, "", nil, err
		}
		if o != nil {
			o.noatime = noatime
		}
		fd, err := openRegular(c, pfd, l.name, flags, &n.id, o)
		if err == nil {
			return fd, pfd, l.name, close, nil
		}
		var st unix.Stat_t
		serr := unix.Fstatat(pfd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW)
		close()
		if serr == nil && n.isInode(&st) {
			// The name is n's: the open of n failed (EACCES...), or a
			// swap raced it (ESTALE: the kernel looks the path up again).
			// Not a symlink that got n's freed number (ELOOP): isInode.
			return -1, -1, "", nil, err
		}
		if serr != nil && serr != syscall.ENOENT && serr != syscall.ENOTDIR {
			return -1, -1, "", nil, serr
		}
		// The name is gone or names another inode now.
		n.dropStaleLink(l.parent, l.name)
	}
}

// openRegular opens name in dirfd with flags as the caller c, never
// following a symlink and never blocking: a FIFO swapped in behind the
// kernel's back would block a plain open for reading until a writer
// came. It returns the descriptor only if it is a regular file and,
// when want is not nil, the inode want names, since the name may have
// changed after the caller looked it up; otherwise ESTALE, on which the
// kernel looks the path up again and retries once.
// When o is not nil, see opened.
// An open for writing that breaks a read lease waits for it to be given
// up (leasewait.go).
func openRegular(c caller.Cred, dirfd int, name string, flags int, want *inoKey, o *opened) (int, error) {
	fd, err := openRegularNow(c, dirfd, name, flags, want, o)
	if err != syscall.EWOULDBLOCK || !waitsForLease(flags) {
		return fd, err
	}
	pfd, err := caller.Openat(c, dirfd, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	return reopenLeased(c, pfd, flags, want, o)
}

// openRegularNow is openRegular that fails with EWOULDBLOCK where it
// would wait for a lease's break: for CREATE, which the kernel sends
// with the directory locked, so that a user who holds a lease of their
// own, unanswered, cannot keep everyone's creates in it waiting.
func openRegularNow(c caller.Cred, dirfd int, name string, flags int, want *inoKey, o *opened) (int, error) {
	fd, err := caller.Openat(c, dirfd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, err
	}
	return checkRegular(fd, flags, want, o)
}

// opened is what openRegular found of the descriptor it returned, for the
// gate: st, its fstat (cache.Opener.Stat); and noatime, asked for by the
// caller of openRegular, which then reports whether the descriptor got
// O_NOATIME besides the flags asked for, set by clamfuse itself (owner or
// CAP_FOWNER), in the same fcntl that clears O_NONBLOCK: the gate then
// reads the contents for its digest with no fcntl of its own
// (cache.Opener.NoAtime), and gate puts the flags asked for back after the
// check with one more. Before, the gate's read took three (cache.noatime).
type opened struct {
	st      unix.Stat_t
	noatime bool
}

// reopenRegular is openRegular for the inode open as fd.
func reopenRegular(c caller.Cred, fd int, flags int, want *inoKey) (int, error) {
	nfd, err := caller.Reopen(c, fd, flags|unix.O_NONBLOCK)
	if err == syscall.EWOULDBLOCK && waitsForLease(flags) {
		return reopenLeased(c, fd, flags, want, nil)
	}
	if err != nil {
		return -1, err
	}
	return checkRegular(nfd, flags, want, nil)
}

// checkRegular returns fd, opened with flags and O_NONBLOCK, if it is a
// regular file (and the inode want, if not nil), with O_NONBLOCK cleared
// unless flags hold it; else it closes fd. F_SETFL changes only the
// status flags O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME and O_NONBLOCK, and
// fd has those of flags: setting flags without O_NONBLOCK clears that
// one alone, with no F_GETFL first (one system call less per open).
// It fills o, when not nil (see opened).
func checkRegular(fd int, flags int, want *inoKey, o *opened) (int, error) {
	if o == nil {
		o = new(opened)
	}
	st := &o.st
	err := unix.Fstat(fd, st)
	if err == nil && (st.Mode&unix.S_IFMT != unix.S_IFREG || (want != nil && (inoKey{st.Dev, st.Ino}) != *want)) {
		err = syscall.ESTALE
	}
	if err == nil && o.noatime {
		// Where O_NOATIME is not allowed (clamfuse not root, and not
		// the owner), the plain flags below, and the gate sets it itself
		// if it can.
		o.noatime = false
		if flags&unix.O_NOATIME == 0 {
			_, nerr := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NOATIME)
			if o.noatime = nerr == nil; o.noatime {
				return fd, nil
			}
		}
	}
	if err == nil && flags&unix.O_NONBLOCK == 0 {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// backingFlags are the open flags clamfuse uses on the backing file: the
// caller's, less creation flags (handled apart) and O_DIRECT (the kernel
// already bypasses its cache for such opens; our buffers are not aligned).
func backingFlags(f fuse.OpenFlags) int {
	return int(f) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_DIRECT)
}
