package cache

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Verdicts carried over a change of metadata made through the mount.
//
// A file over Options.VerifyMaxSize keeps its times in its Key (racy.go):
// a rename moves its ctime, chmod and chown too, utimes its mtime, and
// its verdict no longer matches, though its contents are those judged. A
// download written under a temporary name and renamed once its scan after
// the write was over (a browser's, Samba's), or a copy whose times are set
// after it (rsync), was scanned again at its first open: seconds for a
// file of a GiB.
//
// The filesystem makes such changes itself, so it says when (KeepVerdict):
// the Gate takes a read lease on a descriptor of the file before the
// change, and carries the verdict of the state before it to the state
// after it only if the lease held from before the first fstat until after
// the last, the two states differing in their times alone. While the
// lease holds, nobody has the file open for writing, and nobody opens it
// for writing or truncates it without breaking the lease (lease.go): the
// contents are those of the state before, which the verdict judged. The
// one change that breaks no lease, open(2) with O_RDONLY|O_TRUNC, leaves
// another size. The state after is taken, as for any verdict cached, only
// once its times are safely older than the moment it is taken (racy.go):
// a write after the lease is given up is stamped later, and gives another
// Key; the lease is held until then (a few ms where times have ns, in a
// goroutine of its own where the window is longer).
//
// A scan of such a file holds a read lease too, where one is granted
// (attempts, gate.go): when it held until the fstat after the scan, a
// change of the times alone meanwhile keeps the verdict (a download
// renamed while its scan after the write runs is not scanned twice), and
// the state counts as taken at that fstat for the racy rule, since
// nobody could write the file before it: a file renamed right after its
// writer's close, whose times are too recent when its scan starts, has
// its verdict cached once the scan outlasts the window.

// carryWaitInline is the longest the change's own request waits for the
// state after it to settle; a longer window is waited in a goroutine of
// its own, at most carryMax of them at once (each holds a descriptor).
const (
	carryWaitInline = 25 * time.Millisecond
	carryMax        = 16
)

// KeepVerdict is called before the filesystem changes the metadata of a
// regular file whose state is st (rename, exchange, a hard link made or
// one of several removed, chmod, chown, utimes): when a verdict of that
// state is cached, the file's contents are not verified (a verified
// verdict needs no carrying, verify.go) and the file is where leases
// tell who writes it, it opens the file for reading with open, which
// returns a descriptor of the Gate's own that the Gate closes. done is called once the change is made, or failed; it
// carries the verdict over to the state after the change when nothing
// but the change happened meanwhile (see above). Without a verdict to
// carry, done does nothing, and open is not called.
func (g *Gate) KeepVerdict(st *unix.Stat_t, open func() (*os.File, error)) (done func()) {
	nothing := func() {}
	if !g.caching() || g.judge(st) != toScan || g.verifies(st.Size) {
		return nothing
	}
	if _, _, ok := g.lru.GetSum(g.keyOf(st)); !ok {
		return nothing
	}
	f, err := open()
	if err != nil {
		return nothing
	}
	fd := int(f.Fd())
	var now unix.Stat_t
	if !lease(f, st.Dev) {
		f.Close()
		return nothing
	}
	// The state again, under the lease: a write over between the
	// caller's fstat and the lease shows here.
	before := g.keyOf(st)
	if unix.Fstat(fd, &now) != nil || g.keyOf(&now) != before {
		unlease(f)
		f.Close()
		return nothing
	}
	return func() {
		if unix.Fstat(fd, &now) != nil || now.Mode&unix.S_IFMT != unix.S_IFREG {
			unlease(f)
			f.Close()
			return
		}
		after := g.keyOf(&now)
		if !onlyTimes(before, after) {
			unlease(f)
			f.Close()
			return
		}
		wait := time.Duration(g.settledAt(&now) - time.Now().UnixNano())
		if wait <= carryWaitInline {
			g.carry(f, before, after, wait)
			return
		}
		select {
		case g.carrying <- struct{}{}:
			go func() {
				defer func() { <-g.carrying }()
				g.carry(f, before, after, wait)
			}()
		default:
			unlease(f)
			f.Close()
		}
	}
}

// onlyTimes reports whether after is before with other times: the same
// file, size, database, generation and write generations.
func onlyTimes(before, after Key) bool {
	if before == after {
		return false // the change failed, or left the times: nothing to carry
	}
	after.MtimeNs, after.CtimeNs = before.MtimeNs, before.CtimeNs
	return after == before
}

// carry waits wait, until the state after the change (the Key after, of
// f under its lease) settles, takes it once more, gives up the lease and
// carries the verdict of before over to after when the lease held and the
// state is still after. It closes f.
func (g *Gate) carry(f *os.File, before, after Key, wait time.Duration) {
	defer f.Close()
	if wait > g.TimeWindow(after.Dev)+time.Millisecond {
		unlease(f) // times in the future: never settled
		return
	}
	if wait > 0 {
		time.Sleep(wait + time.Millisecond)
	}
	var st unix.Stat_t
	since := time.Now().UnixNano()
	err := unix.Fstat(int(f.Fd()), &st)
	held := unlease(f)
	if err != nil || !held || g.keyOf(&st) != after || g.racy(&st, since) || !g.caching() {
		return
	}
	if g.lru.carry(before, after) {
		g.carried.Add(1)
		if h := g.hooks.carried; h != nil {
			h()
		}
	}
}
