package cache

// Scans after a write (Prescan): when the last writer of a file written
// through the mount is released, the file is judged in the background,
// so that the next open finds its verdict cached.
//
// At most maxPrescans run at once, each in a goroutine of its own that
// holds a descriptor of its file. Past that, a scan after a write waits
// in a queue, first in first out, as a record of the file's identity
// (device, inode), who wrote it, and how to open it again (a Reopener,
// the filesystem's): no descriptor, a few dozen bytes. When a running
// scan is over, its goroutine takes the oldest record, opens the file
// again through the Reopener and scans it. The queue holds at most
// maxQueued records; past that the oldest is dropped, counted and
// logged (the next open of that file scans it).
//
// A queued file written again through the mount (Modified), or queued
// again by a later writer's release (Prescan), leaves the queue at once:
// its state is gone. One unlinked meanwhile, or that the kernel forgot,
// cannot be opened again and is not scanned. One an open judged
// meanwhile is found in the cache (the key, write generation included,
// decides) and not scanned again; a verdict from before the write never
// matches, since Modified moved the write generation.
//
// Opens come first: a background scan takes its scan slot with the
// lowest priority (slots.go), so a slot that frees goes to an open
// waiting for one before any scan after a write; and it takes the slot
// before its flight starts, looking the state up again once it has it.
//
// Lock order: Gate.pendMu is a leaf.

import (
	"context"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// maxPrescans bounds the scans after a write running at once, each
// with a goroutine and a descriptor.
const maxPrescans = 64

// maxQueued bounds the scans after a write waiting for one of those:
// about 100 bytes each.
const maxQueued = 1 << 14

// Reopener opens a file written through the mount again, for a scan
// after a write that waited in the queue: clamfuse's own open for
// reading of the inode dev, ino, through a descriptor of that very inode
// (never a name resolved again without a check), only if it is a regular
// file that still has a name. The file's Name is a path of it, for the
// log. The filesystem is one (fs.FS).
type Reopener interface {
	ReopenWritten(dev, ino uint64) (*os.File, error)
}

// Stocker, when the Reopener given to Prescan is one too, is told of
// each scan after a write that leaves the file judged clean in the
// cache with a digest of its contents (a file up to
// Options.VerifyMaxSize): f is the Gate's own descriptor of the file
// (StockJudged must not keep it), k the state judged, sum the digest of
// the contents judged. The filesystem may then put those very bytes in
// the kernel's page cache, so that the next open reads none of them
// through FUSE (fs.FS.StockJudged); it must check that the bytes it
// puts there are the ones judged (their digest is sum).
type Stocker interface {
	StockJudged(f *os.File, k Key, sum uint64)
}

// inode names a file: the device and inode of a Key.
type inode struct{ dev, ino uint64 }

// prescan is a running background scan of one file, until it is over.
type prescan struct {
	cancel context.CancelCauseFunc
}

// queued is a scan after a write waiting for its turn.
type queued struct {
	id         inode
	pid, uid   uint32
	again      Reopener
	prev, next *queued // older, newer
}

// prescanQueue is the scans after a write waiting, oldest first, and by
// file. Guarded by Gate.pendMu.
type prescanQueue struct {
	oldest, newest *queued
	byID           map[inode]*queued
}

func (q *prescanQueue) len() int { return len(q.byID) }

func (q *prescanQueue) push(r *queued) {
	r.prev, r.next = q.newest, nil
	if q.newest != nil {
		q.newest.next = r
	} else {
		q.oldest = r
	}
	q.newest = r
	q.byID[r.id] = r
}

func (q *prescanQueue) remove(r *queued) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		q.oldest = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		q.newest = r.prev
	}
	r.prev, r.next = nil, nil
	delete(q.byID, r.id)
}

// pop takes the oldest record out, or returns nil.
func (q *prescanQueue) pop() *queued {
	r := q.oldest
	if r != nil {
		q.remove(r)
	}
	return r
}

// Prescan judges f, written through the mount, in the background and
// caches the verdict, so that the next open of it costs a cache lookup.
// Detections are logged at once. It never blocks: past maxPrescans
// running, the file waits in the queue (see above), to be opened again
// through again when its turn comes; with again nil, or past maxQueued
// waiting, the oldest waiting is dropped and the next open scans it.
//
// The scan lasts until it is over or the file is modified through the
// mount (Modified), or until the next Prescan of the same file, which
// supersedes it: its verdict would be about a state that is gone.
func (g *Gate) Prescan(f *os.File, who Opener, again Reopener) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return
	}
	id := inode{st.Dev, st.Ino}
	g.pendMu.Lock()
	old := g.supersedeLocked(id)
	if g.running >= g.runMax {
		g.enqueueLocked(&queued{id: id, pid: who.Pid, uid: who.Uid, again: again}, who.Path)
		g.pendMu.Unlock()
		if old != nil {
			old.cancel(errSuperseded)
		}
		return
	}
	g.running++
	g.prescans.Add(1)
	j := g.startLocked(id, who)
	g.pendMu.Unlock()
	if old != nil {
		old.cancel(errSuperseded)
	}
	// Our own descriptor: the caller closes f when Prescan returns.
	j.src, _ = reopen(f)
	j.again = again
	go g.prescanWorker(j)
}

// prescanJob is one scan after a write a worker runs.
type prescanJob struct {
	id  inode
	p   *prescan
	ctx context.Context
	src *os.File // nil when the file could not be opened
	who Opener
	// again is the filesystem, which may be a Stocker too; nil in
	// some tests.
	again Reopener
}

// startLocked registers a running scan of id; pendMu is held.
func (g *Gate) startLocked(id inode, who Opener) prescanJob {
	g.prescanned.Add(1)
	ctx, cancel := context.WithCancelCause(context.Background())
	p := &prescan{cancel: cancel}
	g.pending[id] = p
	return prescanJob{id: id, p: p, ctx: ctx, who: who}
}

// supersedeLocked takes id's scan after a write out: a record waiting is
// dropped; a running scan is returned, for the caller to cancel once
// pendMu is let go. pendMu is held.
func (g *Gate) supersedeLocked(id inode) *prescan {
	if r := g.queue.byID[id]; r != nil {
		g.queue.remove(r)
		g.prescans.Add(-1)
	}
	p := g.pending[id]
	delete(g.pending, id)
	return p
}

// enqueueLocked queues r, dropping the oldest record past queueMax (or
// r itself when it cannot be opened again). pendMu is held.
func (g *Gate) enqueueLocked(r *queued, path string) {
	if r.again == nil || g.queueMax <= 0 {
		g.prescansDropped.Add(1)
		g.log.Debug("scan after write dropped: too many pending; the next open scans", "path", path, "running", g.running)
		return
	}
	g.prescansQueued.Add(1)
	g.queue.push(r)
	g.prescans.Add(1)
	for g.queue.len() > g.queueMax {
		o := g.queue.pop()
		g.prescans.Add(-1)
		g.prescansDropped.Add(1)
		g.log.Debug("scan after write dropped: queue full; the next open scans", "dev", o.id.dev, "ino", o.id.ino, "queued", g.queueMax)
	}
}

// prescanWorker runs j, then the queued scans one after the other, until
// the queue is empty.
func (g *Gate) prescanWorker(j prescanJob) {
	for {
		if j.src != nil {
			g.prescanOne(j.ctx, j.src, j.who, j.again)
			j.src.Close()
		}
		g.pendMu.Lock()
		if g.pending[j.id] == j.p {
			delete(g.pending, j.id)
		}
		g.prescans.Add(-1)
		r := g.queue.pop()
		if r == nil {
			g.running--
			g.pendMu.Unlock()
			j.p.cancel(nil)
			return
		}
		// r leaves the queue and runs: still counted once in prescans.
		done := j.p
		j = g.startLocked(r.id, Opener{Pid: r.pid, Uid: r.uid})
		g.pendMu.Unlock()
		done.cancel(nil)
		f, err := r.again.ReopenWritten(r.id.dev, r.id.ino)
		if err != nil {
			g.log.Debug("scan after write not started: the file is gone", "dev", r.id.dev, "ino", r.id.ino, "err", err)
			continue
		}
		j.src, j.who.Path, j.again = f, f.Name(), r.again
	}
}

// prescanOne is one scan after a write of src; again is the filesystem
// (see Stocker), or nil.
func (g *Gate) prescanOne(ctx context.Context, src *os.File, who Opener, again Reopener) {
	// A verdict of a file written a moment ago would not be cached
	// (racy.go): wait until it would be. Opens meanwhile scan.
	if err := g.waitSettled(ctx, int(src.Fd())); err != nil {
		g.log.Debug("scan after write cancelled: written again", "path", who.Path)
		return
	}
	g.demand.add()
	defer g.demand.done()
	r, v, err := g.settle(ctx, src, who.Uid, nil, true)
	switch {
	case errors.Is(err, errSuperseded):
		g.log.Debug("scan after write cancelled: written again", "path", who.Path)
	case err != nil:
		g.log.Debug("scan after write failed; the next open scans again", "path", who.Path, "err", err)
	case r == PrewarmInfected:
		g.log.Warn("infected file written", "path", who.Path, "signature", v.Signature,
			"pid", who.Pid, "uid", who.Uid, "clamd", v.Backend)
	case r == PrewarmClean || r == PrewarmCached:
		if s, ok := again.(Stocker); ok && ctx.Err() == nil {
			g.stock(s, src)
		}
	}
}

// stock tells s of the clean verdict cached for src as it is now, when
// its contents are verified (see Stocker).
func (g *Gate) stock(s Stocker, src *os.File) {
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil || g.judge(&st) != toScan {
		return
	}
	key := g.keyOf(&st)
	if !g.verifies(key.Size) {
		return
	}
	if v, sum, ok := g.lru.GetSum(g.cacheKey(key)); ok && !v.Infected && sum != 0 {
		s.StockJudged(src, key, sum)
	}
}
