package fs

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Timestamp granularity of the backing filesystems.
//
// The gate caches a verdict only once the file's times are older than the
// moment its state was taken by the window of its filesystem, which
// depends on how finely that filesystem stores times (cache/racy.go). The
// filesystem finds this out once per backing filesystem (device), the
// first time it meets one (FS.learnDevice): it creates an unnamed file
// there (O_TMPFILE: no name, nothing any user can see, gone when closed),
// sets its times to 1 ns short of an even second and reads back what the
// filesystem kept; then, when that is finer than 100 ms, it writes to the
// file until its change time moves, and takes that step if it is coarser.
// Where this cannot be done (no O_TMPFILE, as on FAT and NFS; a
// read-only or full filesystem), or where times come from another
// machine's clock (network and FUSE filesystems), it takes 2 s.

// unknownGranularity is taken where the granularity cannot be found.
const unknownGranularity = 2 * time.Second

// remoteFS are filesystem types whose times come from another machine's
// clock (or another node's): their granularity says nothing of the skew.
var remoteFS = map[int64]bool{
	unix.NFS_SUPER_MAGIC: true, unix.SMB_SUPER_MAGIC: true, unix.SMB2_SUPER_MAGIC: true,
	unix.CIFS_SUPER_MAGIC: true, unix.FUSE_SUPER_MAGIC: true, unix.V9FS_MAGIC: true,
	unix.CEPH_SUPER_MAGIC: true, unix.AFS_SUPER_MAGIC: true, unix.AFS_FS_MAGIC: true,
	unix.CODA_SUPER_MAGIC: true, unix.NCP_SUPER_MAGIC: true, unix.OCFS2_SUPER_MAGIC: true,
	0x01161970: true, // GFS2
}

// meet learns the device of st, found as name in directory dirfd, when
// it is met for the first time.
func (f *FS) meet(dirfd int, name string, st *unix.Stat_t) {
	if st.Dev == f.rootN.id.dev {
		return // learnt in New
	}
	if _, known := f.devices.Load(st.Dev); known {
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		f.learnDevice(dirfd, st.Dev) // when dirfd is on the same device
		return
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	f.learnDevice(fd, st.Dev)
}

// learnDevice finds the timestamp granularity of the filesystem of
// directory dirfd, device dev, once per device, and tells the gate.
// Meeting a device already known costs a map lookup.
func (f *FS) learnDevice(dirfd int, dev uint64) {
	if _, known := f.devices.Load(dev); known {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(dirfd, &st) != nil || st.Dev != dev {
		return // not a directory of that device: next time
	}
	if _, raced := f.devices.LoadOrStore(dev, true); raced {
		return
	}
	gran, how := probeGranularity(dirfd)
	f.opts.Gate.SetTimeGranularity(dev, gran)
	f.log.Info("backing filesystem timestamps", "device", fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)),
		"granularity", gran, "found_by", how)
}

// probeGranularity returns the step in which the filesystem of directory
// dirfd stores file times, and how it found it.
func probeGranularity(dirfd int) (time.Duration, string) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(dirfd, &sfs); err != nil {
		return unknownGranularity, "statfs failed: " + err.Error()
	}
	if remoteFS[int64(sfs.Type)] {
		return unknownGranularity, fmt.Sprintf("filesystem type %#x: times from another clock", sfs.Type)
	}
	fd, err := unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return unknownGranularity, "no O_TMPFILE: " + err.Error()
	}
	defer unix.Close(fd)
	set := unix.Timespec{Sec: 1_000_000_001, Nsec: 999_999_999}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd), []unix.Timespec{set, set}, 0); err != nil {
		return unknownGranularity, "utimensat failed: " + err.Error()
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return unknownGranularity, "fstat failed: " + err.Error()
	}
	// A filesystem keeps a time rounded down to its step: the time set
	// is one short of a multiple of every step from 1 ns to 2 s.
	gran := time.Duration(set.Nano()-st.Mtim.Nano()) + 1
	if gran < 1 || gran > unknownGranularity {
		return unknownGranularity, fmt.Sprintf("set a time, read back %v: unexpected", time.Unix(st.Mtim.Unix()))
	}
	if gran >= 100*time.Millisecond {
		return gran, "time set on a temporary file"
	}
	step, ok := writeStep(fd, 100*time.Millisecond)
	switch {
	case !ok:
		return unknownGranularity, "writes for 100ms left the change time alone"
	case step > 2*max(gran, coarseTick()):
		return step, "writes to a temporary file"
	}
	return gran, "time set on a temporary file, checked by writes"
}

// writeStep writes to fd until its change time moves, for at most d, and
// returns by how much it moved.
func writeStep(fd int, d time.Duration) (time.Duration, bool) {
	var st unix.Stat_t
	deadline := time.Now().Add(d)
	first := int64(-1)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := unix.Pwrite(fd, []byte{byte(i)}, 0); err != nil {
			return 0, false
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return 0, false
		}
		switch c := st.Ctim.Nano(); {
		case first < 0:
			first = c
		case c != first:
			return time.Duration(c - first), true
		}
	}
	return 0, false
}

// coarseTick is the step of the clock the kernel stamps file times from.
func coarseTick() time.Duration {
	var ts unix.Timespec
	if unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &ts) != nil || ts.Nano() <= 0 {
		return 10 * time.Millisecond
	}
	return time.Duration(ts.Nano())
}
