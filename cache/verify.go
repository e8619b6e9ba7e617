package cache

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Contents the Key cannot show.
//
// Some writes leave size, mtime and ctime as they were: a process that
// writes through a shared mapping of the backing file (outside the mount,
// or made before an in-place mount) into a page that is already dirty
// causes no page fault, and so no time update; on tmpfs only the first
// write to each page of a mapping updates the times. For files up to
// Options.VerifyMaxSize the Gate therefore keeps, with each verdict, a
// keyed digest of the contents it judged, and clamd judges exactly the
// bytes digested, so that no change made under the scan and undone can
// pass for them: the file itself under a read lease that shows nobody
// can write it (lease.go), or else a private copy read once and digested
// (snapshot), after which the file's digest is compared too (when it
// differs the file changed under the scan, and it is scanned again). It
// uses a cached clean verdict only when a digest of the opener's
// descriptor, read now (from the page cache, which such writes update),
// is the same. The digest is maphash's, with a seed made at start that
// never leaves the process: fast, and nobody can search for two contents
// that share a digest.

var sumSeed = maphash.MakeSeed()

// Digest computes, over the bytes written to it in order, the digest the
// Gate keeps of the contents it judged (Decision.Sum): the filesystem
// checks the bytes it serves with it.
type Digest struct{ h maphash.Hash }

// NewDigest returns an empty Digest.
func NewDigest() *Digest {
	d := new(Digest)
	d.h.SetSeed(sumSeed)
	return d
}

// Write adds p to the bytes digested.
func (d *Digest) Write(p []byte) { d.h.Write(p) }

// Sum is the digest of the bytes written so far; never 0.
func (d *Digest) Sum() uint64 {
	if s := d.h.Sum64(); s != 0 {
		return s
	}
	return 1
}

// sumBufs are read buffers for contentSum.
var sumBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// errShort means a file held fewer bytes than its size said: it changed.
var errShort = errors.New("file shorter than its size")

// contentSum is the digest of the first size bytes of f, read with pread
// (f's offset does not move). It is never 0.
func contentSum(f *os.File, size int64) (uint64, error) {
	bp := sumBufs.Get().(*[]byte)
	defer sumBufs.Put(bp)
	buf := *bp
	if size <= int64(len(buf)) {
		return readSum(f, buf[:size]) // most files: one read, one call
	}
	h := NewDigest()
	for off := int64(0); off < size; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		h.Write(buf[:n])
		off += int64(n)
		if err == io.EOF && off < size {
			return 0, errShort
		}
		if err != nil && err != io.EOF {
			return 0, fmt.Errorf("reading for the content digest: %w", err)
		}
	}
	return h.Sum(), nil
}

// snapshot copies the first size bytes of f, read with pread, into a
// private file (a sealed memfd) and returns it, with their digest. clamd
// is handed that copy, never f itself: nobody but clamfuse can write it,
// so the verdict is about exactly the bytes digested. A digest of f
// before and after the scan cannot tell that: a write through a shared
// mapping whose page is already dirty leaves no trace in the Key, and a
// hostile user could put clean bytes in only while clamd reads f, and
// the infected ones back before the check after the scan (whose digest
// then agrees with the one before, both of the infected bytes;
// TestGateUndoneUnderScan). The copy is named after f's path, which
// clamd's log then shows as "/memfd:PATH (deleted)". The caller closes
// the copy. errShort: f held fewer bytes.
func snapshot(f *os.File, size int64) (*os.File, uint64, error) {
	name, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		name = "clamfuse-judged"
	}
	if len(name) > memfdNameMax {
		name = name[len(name)-memfdNameMax:]
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, 0, fmt.Errorf("memfd_create: %w", err)
	}
	snap := os.NewFile(uintptr(fd), "judged")
	bp := sumBufs.Get().(*[]byte)
	defer sumBufs.Put(bp)
	buf := *bp
	h := NewDigest()
	for off := int64(0); off < size; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n > 0 {
			h.Write(buf[:n])
			if _, werr := snap.WriteAt(buf[:n], off); werr != nil {
				snap.Close()
				return nil, 0, fmt.Errorf("copying the contents to judge: %w", werr)
			}
			off += int64(n)
		}
		if off < size && (err == io.EOF || (err == nil && n == 0)) {
			snap.Close()
			return nil, 0, errShort
		}
		if err != nil && err != io.EOF {
			snap.Close()
			return nil, 0, fmt.Errorf("reading for the content digest: %w", err)
		}
	}
	const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		snap.Close()
		return nil, 0, fmt.Errorf("sealing the contents to judge: %w", err)
	}
	// clamd gets a descriptor for reading only, as of the file itself.
	if ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		snap.Close()
		snap = os.NewFile(uintptr(ro), "judged")
	}
	return snap, h.Sum(), nil
}

// readSum reads the first len(buf) bytes of f into buf, with pread, and
// returns their digest (maphash.Bytes is the digest of a Hash written the
// same bytes, so Digest agrees), never 0; errShort if f holds fewer.
func readSum(f *os.File, buf []byte) (uint64, error) {
	n, err := f.ReadAt(buf, 0)
	switch {
	case n == len(buf):
	case err == nil || err == io.EOF:
		return 0, errShort
	default:
		return 0, fmt.Errorf("reading for the content digest: %w", err)
	}
	if s := maphash.Bytes(sumSeed, buf); s != 0 {
		return s, nil
	}
	return 1, nil
}

// memfdNameMax is the longest name memfd_create takes.
const memfdNameMax = 249

// readJudged reads the size bytes of snap, the copy clamd judged, into
// buf when it holds exactly that many, and reports whether it did.
func readJudged(snap *os.File, buf []byte, size int64) bool {
	if snap == nil || int64(len(buf)) != size {
		return false
	}
	n, err := snap.ReadAt(buf, 0)
	return n == len(buf) && (err == nil || err == io.EOF)
}

// verifies reports whether the verdicts of files of size bytes carry a
// digest of their contents.
func (g *Gate) verifies(size int64) bool {
	return g.opts.VerifyMaxSize > 0 && size <= g.opts.VerifyMaxSize
}

// cacheKey is the key that key's verdict is cached under. For a file
// whose contents are verified it leaves out the times: a rename, chmod
// or utimes moves ctime (utimes mtime too) and keeps the contents, as a
// download written under a temporary name and then renamed, or a copy
// whose times are set after it was written (rsync, cp -p) do, and the
// digest of the contents decides whether the verdict still holds
// (lookup). Scans are still shared by the full key (the flights of
// check), and the check after a scan compares full keys too, so an open
// never takes the verdict of a scan of another state without having
// verified its contents itself.
func (g *Gate) cacheKey(key Key) Key {
	if g.verifies(key.Size) {
		key.MtimeNs, key.CtimeNs = 0, 0
	}
	return key
}

// lookup returns the verdict cached for key, when there is one and, for
// a file whose contents are verified, f still holds the contents it
// judged. An infected verdict is verified too: in audit mode or by an
// allow list it may allow (allow.go).
// The digest of the contents comes with the verdict (0 for none).
// hasNoatime says f has O_NOATIME set already (Opener.NoAtime).
func (g *Gate) lookup(key Key, f *os.File, hasNoatime bool) (Verdict, uint64, bool) {
	v, sum, ok := g.lru.GetSum(g.cacheKey(key))
	if !ok || !g.verifies(key.Size) {
		return v, sum, ok
	}
	var now uint64
	var err error
	if hasNoatime {
		now, err = contentSum(f, key.Size)
	} else {
		noatime(f, func() { now, err = contentSum(f, key.Size) })
	}
	if err != nil || now != sum {
		g.changed.Add(1)
		return Verdict{}, 0, false
	}
	return v, sum, true
}

// noatime runs read, which reads f, with O_NOATIME set on f's open file
// description, and then puts f's flags back: the digest of a cached
// verdict, read through the opener's own descriptor, leaves the file's
// access time as a plain open that reads nothing would (as the scans
// do, on a descriptor of their own opened with O_NOATIME; see reopen).
// f must not be in use elsewhere meanwhile: it is the descriptor of an
// open not yet answered. Where O_NOATIME cannot be set, read runs as is.
func noatime(f *os.File, read func()) {
	fd := int(f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NOATIME != 0 {
		read()
		return
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NOATIME); err != nil {
		read()
		return
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags)
	read()
}
