package cache

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Racily clean files.
//
// The kernel stamps a file's times from its coarse clock, which moves
// one tick at a time (4 ms at HZ=250), and the filesystem stores them at
// its own granularity: 1 ns on ext4 with large inodes, xfs, btrfs and
// tmpfs, 1 s on ext4 with 128-byte inodes, 2 s on FAT, whatever the
// server does on NFS. A scan takes about a millisecond, so a change right
// after a scan can leave size, mtime and ctime as the scan saw them, and
// a verdict cached under those would be served for bytes clamd never saw.
//
// As git does with its racily clean index entries, a verdict is cached
// only when the file's mtime and ctime are safely older than the moment
// its state was taken (the fstat the Key came from): older by the
// filesystem's window, its granularity plus two ticks of the coarse
// clock, so that any change after that moment is stamped later, and
// gives another Key. A racy verdict still decides the opens that waited
// for its scan; it is just not cached, and the next open scans again,
// until the times are old enough. A scan after a write (Prescan) first
// waits until they are.
//
// None of this applies to a file whose contents the Gate verifies (up to
// Options.VerifyMaxSize, verify.go): its verdict carries a digest of the
// bytes judged, taken before and after the scan, and a cached verdict is
// used only when the opener's descriptor holds those very bytes now. A
// change that keeps the Key after the scan, racy or not, through the
// mount or behind it, changes the contents, so the digest misses and the
// file is scanned again. Such a verdict is cached at once, and the scan
// after a write starts at once, so that opens right after the writer's
// last close share it instead of scanning on their own.
//
// The filesystem reports the granularity of each backing filesystem
// (SetTimeGranularity); a device it did not report is taken as
// unknownGranularity. Times in the future (a clock set back, an mtime
// set ahead) are racy until the clock passes them.

// unknownGranularity is taken for a filesystem whose granularity was
// not reported; unknownWindow is its window (tests set it).
var (
	unknownGranularity = 2 * time.Second
	unknownWindow      = unknownGranularity + 2*coarseTick
)

// coarseTick is the step of the clock the kernel stamps times from.
var coarseTick = func() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &ts); err != nil || ts.Nano() <= 0 {
		return 10 * time.Millisecond // HZ=100, the coarsest Linux has
	}
	return time.Duration(ts.Nano())
}()

// timeWindows are the windows of the backing filesystems, by device.
type timeWindows struct {
	m sync.Map // uint64 device -> time.Duration window
}

// SetTimeGranularity says that the filesystem of device dev stores
// file times in steps of gran (2 s, 1 s, 10 ms, 1 ns...). A verdict
// of a file there is cached only once its times are older than the
// moment its state was taken by gran plus two ticks of the kernel's
// coarse clock.
func (g *Gate) SetTimeGranularity(dev uint64, gran time.Duration) {
	g.windows.m.Store(dev, max(gran, 0)+2*coarseTick)
}

// TimeWindow is how much older than the moment a file's state is taken
// its times must be for its verdict to be cached, on device dev.
func (g *Gate) TimeWindow(dev uint64) time.Duration {
	if w, ok := g.windows.m.Load(dev); ok {
		return w.(time.Duration)
	}
	return unknownWindow
}

// settledAt is the moment (Unix ns) from which a state taken no longer
// finds st racy: its newest time plus the window.
func (g *Gate) settledAt(st *unix.Stat_t) int64 {
	return max(st.Mtim.Nano(), st.Ctim.Nano()) + int64(g.TimeWindow(st.Dev))
}

// racy reports whether st, taken at since (Unix ns, read before the
// fstat), is too recent for its verdict to be cached.
func (g *Gate) racy(st *unix.Stat_t, since int64) bool { return since < g.settledAt(st) }

// waitSettled waits until a state of the file fd taken now would not be
// racy, or until ctx is done. It waits at most one window: a file whose
// times are in the future is scanned at once (and not cached). It does
// not wait for a file whose contents are verified (see above).
func (g *Gate) waitSettled(ctx context.Context, fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if g.verifies(st.Size) {
		return nil
	}
	wait := time.Duration(g.settledAt(&st) - time.Now().UnixNano())
	if wait <= 0 || wait > g.TimeWindow(st.Dev)+time.Millisecond {
		return nil
	}
	t := time.NewTimer(wait + time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
