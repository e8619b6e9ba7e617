package fs

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"bazil.org/fuse"
)

// Opens while someone writes through the mount.
//
// Reads through the mount share the kernel's page cache with every other
// open of the file, mappings included. While a process holds a file open
// for writing (or mapped shared and writable) through the mount, its
// writes can sit in that page cache as dirty pages the backing file does
// not have yet: a verdict from the cache, or a scan of the backing file,
// would judge bytes other than the ones a new reader is served. So an open
// for reading while another process has a writable handle of the file is
// never decided from the cache (scan.while_written = "rescan"): the
// filesystem first has the kernel write the dirty pages back and drop the
// page cache (FUSE's inode invalidation; the writebacks arrive as WRITE
// requests, served by other request goroutines, and move the file's
// generation in the gate), then asks the gate for a scan of the file as
// it is now. What the writer writes after that reaches the reader through
// the shared page cache, unscanned, as it would on a local filesystem.
//
// With scan.while_written = "deny", reading and writing by different
// processes exclude each other instead, like share modes: an open for
// reading while another process has a writable handle, and an open for
// writing while another process has a readable one, fail with ETXTBSY
// (the file is busy), and no reader ever sees what another process writes
// through the mount. The check that decides is made when the handle is
// registered, under Node.hmu, after the gate: two opens that race cannot
// both get in.
//
// A process is a thread group: the FUSE header names the thread that
// asked, and its thread group is read from /proc/TID/status once per
// handle that needs it. A handle whose process cannot be told (exited,
// in a PID namespace the server does not see) counts as another process.

// errBusy refuses an open that scan.while_written = "deny" excludes.
var errBusy = syscall.ETXTBSY

// tgidOf returns the thread group (process) of thread tid, or -1 when it
// cannot be told.
func tgidOf(tid uint32) int32 {
	if tid == 0 {
		return -1
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return -1
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("Tgid:")); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 32)
			if err != nil || n <= 0 {
				return -1
			}
			return int32(n)
		}
	}
	return -1
}

// sameProcess reports whether two thread groups are known and the same.
func sameProcess(a, b int32) bool { return a > 0 && a == b }

// process is the thread group of h's opener, read once.
func (h *Handle) process() int32 {
	if p := h.tgid.Load(); p != 0 {
		return p
	}
	p := tgidOf(h.who.Pid)
	h.tgid.Store(p)
	return p
}

// otherWriters reports whether a process other than h's opener holds a
// writable handle of n. The opener's process is read only when some
// handle is writable, before hmu is taken.
func (n *Node) otherWriters(h *Handle) bool {
	n.hmu.Lock()
	writers := n.writersLocked()
	n.hmu.Unlock()
	if writers == 0 {
		return false
	}
	tgid := h.process()
	n.hmu.Lock()
	defer n.hmu.Unlock()
	for o := range n.handlesLocked().all() {
		if o.writable && !sameProcess(o.process(), tgid) {
			return true
		}
	}
	return false
}

// settleReleases waits, up to releaseWait, while RELEASEs of files the
// kernel sent are not served yet, and reports whether there were any.
// The kernel sends a RELEASE in the background once the close(2) that
// caused it has returned, and the request loop may serve it beside an
// open sent after it: an open that another process's open would refuse
// (scan.while_written = "deny") checks again once they are served, so
// that a file closed before the open does not refuse it. It sleeps
// until the last of them is served (no polling: a user who makes many
// such opens at once costs no CPU for their waits).
func (f *FS) settleReleases() bool {
	srv := f.srv
	if srv == nil {
		return false
	}
	served := srv.ReleasesServed()
	if served == nil {
		return false
	}
	t := time.NewTimer(releaseWait)
	defer t.Stop()
	select {
	case <-served:
	case <-t.C:
	}
	return true
}

// releaseWait bounds settleReleases: serving a RELEASE takes
// microseconds; past this, the RELEASEs in flight are others, sent
// meanwhile, and the open is decided as they stand.
const releaseWait = 100 * time.Millisecond

// busy refuses h's open (scan.while_written = "deny") because another
// process has the file open for writing (writes) or reading, and logs it.
func (n *Node) busy(h *Handle, writes bool) error {
	msg := `open refused: another process has the file open for reading (scan.while_written = "deny")`
	if writes {
		msg = `open refused: another process has the file open for writing (scan.while_written = "deny")`
	}
	n.fsys.log.Warn(msg, "path", h.who.Path, "pid", h.who.Pid, "uid", h.who.Uid, "write", h.writable)
	return errno(errBusy)
}

// conflictLocked reports whether h, about to be registered, is excluded
// by a handle of another process (scan.while_written = "deny"). n.hmu is
// held.
func (n *Node) conflictLocked(h *Handle) *Handle {
	for o := range n.handlesLocked().all() {
		if (h.readable && o.writable || h.writable && o.readable) && !sameProcess(o.process(), h.process()) {
			return o
		}
	}
	return nil
}

// flushWriters has the kernel write back the pages of n that writers
// dirtied through the mount, and drop n's page cache, before an open for
// reading is judged. The kernel sends the writebacks as WRITE requests
// and answers the notification once they are done; other request
// goroutines serve them (fusefs's readLoop always keeps one reading).
func (n *Node) flushWriters() {
	srv := n.fsys.srv
	if srv == nil {
		return
	}
	if err := srv.InvalidateNodeData(n); err != nil && err != fuse.ErrNotCached {
		n.fsys.log.Debug("writing back the pages of a file open for writing failed", "path", n.RelPath(), "err", err)
	}
}

// denyWhileWritten reports whether scan.while_written is "deny".
func (f *FS) denyWhileWritten() bool {
	return f.opts.DenyWhileWritten != nil && f.opts.DenyWhileWritten()
}
