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
// backing file, and Modified moves the generation of the file's slot,
// which every Key carries (Key.Writes). A scan whose check after the scan
// ran before the move then caches its verdict under a generation no open
// asks for any more; one whose check ran after sees the new generation
// and scans again.
//
// The generations live in a fixed array of slots indexed by a keyed hash
// of (device, inode), so that their memory does not grow with the number
// of files written: two files that share a slot only cost each other an
// extra scan after a write. The key of the hash is random and never
// leaves the process, so nobody can pick files that share a slot.

// writeSlots is the number of generation slots (256 KiB of uint32).
const writeSlots = 1 << 16

// writeGens are the generations of the files written through the mount.
type writeGens struct {
	seed  maphash.Seed
	slots [writeSlots]atomic.Uint32
	total atomic.Uint64 // bumps so far, for SaveState
}

func (w *writeGens) slot(dev, ino uint64) *atomic.Uint32 {
	return &w.slots[maphash.Comparable(w.seed, inode{dev, ino})&(writeSlots-1)]
}

// of is the generation of the file dev, ino.
func (w *writeGens) of(dev, ino uint64) uint64 { return uint64(w.slot(dev, ino).Load()) }

// bump moves the generation of the file dev, ino.
func (w *writeGens) bump(dev, ino uint64) {
	w.slot(dev, ino).Add(1)
	w.total.Add(1)
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
