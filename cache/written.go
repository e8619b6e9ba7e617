package cache

import (
	"hash/maphash"
	"sync/atomic"
)

// Writes through the mount.
//
// A change made through the mount (a write, a truncation, fallocate, the
// writeback of a shared mapping) must make every verdict of that file
// stale at once, whatever its times say: on a filesystem whose clock is
// coarser than a scan, a same-size rewrite keeps size, mtime and ctime.
// The filesystem reports each change with Modified, after it reached the
// backing file, and Modified moves the generations of the file's slots,
// which every Key carries (Key.Writes). A scan whose check after the scan
// ran before the move then caches its verdict under generations no open
// matches any more; one whose check ran after sees the new ones and scans
// again.
//
// The generations live in two fixed arrays of slots, each indexed by a
// keyed hash of (device, inode) of its own, so that their memory does not
// grow with the number of files written. A change moves the file's slot
// in both; a Key carries both generations, and a verdict is used while at
// least one of them is the one its Key had (sameWrites): the file's own
// change moves both, a change of another file that shares one of its
// slots only that one. With one array, two files sharing a slot cost
// each other a scan: 2000 files written in a row, then opened, made 30
// scans more (as many as the pairs sharing one of 65536 slots); with
// two, a file is scanned again for others' writes only when both its
// slots are shared, about (files written / 65536)^2 of the time. The
// keys of the hashes are random and never leave the process, so nobody
// can pick files that share slots.

// writeSlots is the number of generation slots of each array (256 KiB of
// uint32 each).
const writeSlots = 1 << 16

// writeGens are the generations of the files written through the mount.
type writeGens struct {
	seeds [2]maphash.Seed
	slots [2][writeSlots]atomic.Uint32
	total atomic.Uint64 // bumps so far, for SaveState
}

func newWriteGens() *writeGens {
	return &writeGens{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

func (w *writeGens) slot(a int, dev, ino uint64) *atomic.Uint32 {
	return &w.slots[a][maphash.Comparable(w.seeds[a], inode{dev, ino})&(writeSlots-1)]
}

// of is the generations of the file dev, ino: its slot's in the first
// array in the high 32 bits, in the second in the low ones.
func (w *writeGens) of(dev, ino uint64) uint64 {
	return uint64(w.slot(0, dev, ino).Load())<<32 | uint64(w.slot(1, dev, ino).Load())
}

// bump moves the generations of the file dev, ino. A reader of both
// between the two moves sees one moved, as if it read before: the
// change counts from the second move on.
func (w *writeGens) bump(dev, ino uint64) {
	w.slot(0, dev, ino).Add(1)
	w.slot(1, dev, ino).Add(1)
	w.total.Add(1)
}

// sameWrites reports whether a file whose generations were then (of a
// Key) and are now was not changed through the mount in between: its own
// change moves both, another file's at most one.
func sameWrites(then, now uint64) bool {
	return uint32(then>>32) == uint32(now>>32) || uint32(then) == uint32(now)
}

// Modified says that the file dev, ino (those of its Key) was changed
// through the mount: written, truncated, allocated or punched. The
// filesystem calls it after every such change has reached the backing
// file. From then on no verdict made before matches the file (see
// Key.Writes), and a scan after a write (Prescan) still running is
// cancelled, down to its exchange with clamd, and caches nothing; opens
// that shared it look again. One still queued leaves the queue. Cheap: a hash and an atomic add, and a
// lookup only while scans after a write are pending.
func (g *Gate) Modified(dev, ino uint64) {
	g.writes.bump(dev, ino)
	if g.prescans.Load() == 0 {
		return
	}
	g.pendMu.Lock()
	p := g.supersedeLocked(inode{dev, ino})
	g.pendMu.Unlock()
	if p != nil {
		p.cancel(errSuperseded)
	}
}
