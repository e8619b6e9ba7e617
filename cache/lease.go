package cache

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Read leases: no private copy where nobody can write.
//
// The private copy clamd judges (snapshot, verify.go) is there for a
// writer that changes the file under the scan and leaves no trace. A read
// lease (fcntl F_SETLEASE, F_RDLCK) on the Gate's own read-only
// descriptor shows there is none: the kernel grants it only while nobody
// has the inode open for writing (a shared writable mapping keeps its
// file open for writing, even once its descriptor is closed), and breaks
// it before anyone opens it for writing or truncates it, by any path,
// through any mount of this machine. So while the lease holds, the bytes
// clamd reads through the file's own descriptor are the ones digested
// under it, and clamd judges the file itself, with no copy. One way to
// change it breaks no lease (Linux 6.18): open(2) with O_RDONLY|O_TRUNC
// empties a file its caller may write. That only shortens it, which the
// size in the Key shows after the scan (and the bytes handed over read
// short); putting bytes back takes an open for writing, which breaks the
// lease (TestGateLeaseReadOnlyTruncate).
//
// An open for writing with O_NONBLOCK fails with EWOULDBLOCK during a
// break rather than wait: clamfuse's own opens of backing files have it,
// and make the open again without it (fs/leasewait.go).
//
// A break makes the new writer's open wait until the lease is given up
// (or /proc/sys/fs/lease-break-time, 45 s by default, passes): the kernel
// sends SIGIO, on which every lease whose break is pending is given up at
// once (watchLeases), so that a writer waits for no scan. The scan whose
// lease was broken is not used: it is made again, on a copy (attempts).
//
// A lease speaks only for this machine's writers of this inode, so it is
// taken only on local filesystems (leaseFS): never on network ones (NFS,
// CIFS: another machine writes there), nor on stacked ones (FUSE,
// overlayfs: the bytes may come from somewhere else), where the copy
// stays; and of those only where the device under the filesystem is the
// machine's own (ownDevice, below). Leases need CAP_LEASE for files clamfuse does not own (the unit
// grants it); without it, or with fs.leases-enable = 0, every scan copies.

// leaseFS are the filesystems, by statfs f_type, whose read leases see
// every writer of the bytes read through the descriptor.
var leaseFS = map[int64]bool{
	unix.EXT4_SUPER_MAGIC:  true, // also ext2 and ext3
	unix.XFS_SUPER_MAGIC:   true,
	unix.BTRFS_SUPER_MAGIC: true, // but its st_dev is no block device: see ownDevice
	unix.TMPFS_MAGIC:       true,
}

// A lease sees writers of the file, not of the device under its
// filesystem. Whoever can change the device's blocks changes the file's
// bytes with no lease broken, and once the file's pages leave the page
// cache (any reader may evict them: POSIX_FADV_DONTNEED) its next read
// reads the device again: clamd may read other bytes than the digest's
// and the page cache store's (TestGateLeaseDeviceUnderneath). A user
// who owns a disk image attached to a loop device (udisks does it for
// the desktop's user) can; so can whoever serves a network block device,
// and a USB stick may answer each read as it likes. So leases are taken
// only on tmpfs, and on filesystems whose device ownDevice trusts: a
// disk of the machine's own, or a device-mapper or md device on such
// disks only. Elsewhere (loop, nbd, ublk, zram and other virtual
// devices; USB, iSCSI, removable; Btrfs, whose st_dev names no block
// device) the private copy stays.

// ownMount is ownDevice for the file open as fd, on device dev, kept for
// the mount fd is on: a mount's device does not change (but by root), and
// a mount's unique ID (statx STATX_MNT_ID_UNIQUE, Linux 6.8) is never
// given to another, whereas a device number may name another device once
// its filesystem is unmounted. Without that ID, ownDeviceKept.
func ownMount(fd int, dev uint64) bool {
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID_UNIQUE, &stx)
	if err != nil || stx.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return ownDeviceKept(dev)
	}
	ownMounts.mu.Lock()
	own, ok := ownMounts.by[stx.Mnt_id]
	ownMounts.mu.Unlock()
	if ok {
		return own
	}
	own = ownDevice(dev)
	ownMounts.mu.Lock()
	defer ownMounts.mu.Unlock()
	if ownMounts.by == nil || len(ownMounts.by) >= ownMountsMax {
		ownMounts.by = make(map[uint64]bool) // mounts come and go: start over
	}
	ownMounts.by[stx.Mnt_id] = own
	return own
}

// ownMounts are ownDevice's answers, by unique mount ID; at most
// ownMountsMax.
var ownMounts struct {
	mu sync.Mutex
	by map[uint64]bool
}

const ownMountsMax = 1024

// ownDevice reports whether the block device dev (st_dev), as sysfs
// shows it now, is a disk of the machine's own or stacked on such only.
// It reads sysfs: about 50 µs.
func ownDevice(dev uint64) bool {
	return ownBlock(devSys(dev), 0)
}

// devSys is the sysfs link of the block device dev.
func devSys(dev uint64) string {
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
}

// ownDeviceKept is ownDevice for kernels without unique mount IDs (before
// Linux 6.8, as Debian 12's 6.1), kept by device number, and used again
// only while the device's sysfs link (one readlink, about 2 µs) names the
// same device: a number given to another device once the first one's
// filesystem is unmounted comes with another place on the machine's
// buses. Only for a disk (not virtual): a device-mapper or md device
// keeps its name and place whatever lies under it, and is looked at each
// time.
func ownDeviceKept(dev uint64) bool {
	link, err := os.Readlink(devSys(dev))
	if err != nil {
		return false
	}
	ownDevs.mu.Lock()
	e, ok := ownDevs.by[dev]
	ownDevs.mu.Unlock()
	if ok && e.link == link {
		return e.own
	}
	own := ownDevice(dev)
	if strings.Contains(link, "/virtual/") {
		return own
	}
	ownDevs.mu.Lock()
	defer ownDevs.mu.Unlock()
	if ownDevs.by == nil || len(ownDevs.by) >= ownMountsMax {
		ownDevs.by = make(map[uint64]ownDev)
	}
	ownDevs.by[dev] = ownDev{link: link, own: own}
	return own
}

// ownDev is ownDeviceKept's answer for a device, with the sysfs link it
// was given for.
type ownDev struct {
	link string
	own  bool
}

// ownDevs are ownDeviceKept's answers, by device number.
var ownDevs struct {
	mu sync.Mutex
	by map[uint64]ownDev
}

// ownBlock is ownDevice for the block device at sys, depth levels of
// stacking down.
func ownBlock(sys string, depth int) bool {
	real, err := filepath.EvalSymlinks(sys)
	if err != nil || depth > 8 {
		return false
	}
	if slaves, err := os.ReadDir(filepath.Join(real, "slaves")); err == nil && len(slaves) > 0 {
		// device-mapper, md: every device under it must be one.
		for _, s := range slaves {
			if !ownBlock(filepath.Join("/sys/class/block", s.Name()), depth+1) {
				return false
			}
		}
		return true
	}
	disk := real
	if _, err := os.Stat(filepath.Join(real, "partition")); err == nil {
		disk = filepath.Dir(real)
	}
	if i := strings.Index(disk, "/virtual/nvme-subsystem/"); i >= 0 {
		// An NVMe namespace as the kernel's own multipath shows it
		// (under a subsystem, even with one path): its controllers say
		// where it is.
		if !nvmeLocal(filepath.Dir(disk)) {
			return false
		}
		real = disk[:i] // no longer virtual
	}
	for _, part := range []string{"/virtual/", "/usb", "/session", "/nvme-fabrics/"} {
		if strings.Contains(real, part) {
			return false // loop, nbd, ublk...; USB; iSCSI; NVMe over fabrics
		}
	}
	removable, err := os.ReadFile(filepath.Join(disk, "removable"))
	return err == nil && strings.TrimSpace(string(removable)) == "0"
}

// leases are the read leases held now, by descriptor, each with whether
// it was given up on a break.
var leases struct {
	once sync.Once
	mu   sync.Mutex
	held map[int]bool // descriptor -> broken
}

// lease takes a read lease on f, a descriptor opened for reading only,
// of a file on device dev (st_dev), and reports whether it holds one.
// Where it does, unlease must follow before f is closed.
func lease(f *os.File, dev uint64) bool {
	fd := int(f.Fd())
	var fs unix.Statfs_t
	if unix.Fstatfs(fd, &fs) != nil || !leaseFS[int64(fs.Type)] {
		return false
	}
	if fs.Type != unix.TMPFS_MAGIC && !ownMount(fd, dev) {
		return false
	}
	leases.once.Do(watchLeases)
	leases.mu.Lock()
	defer leases.mu.Unlock()
	if _, ok := leases.held[fd]; ok {
		return false // one lease per descriptor at a time
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		// EAGAIN: someone has it open for writing. EACCES: no
		// CAP_LEASE. EINVAL: leases are off, or f is not read-only.
		return false
	}
	leases.held[fd] = false
	return true
}

// unlease gives up the lease lease took on f and reports whether it held
// from then until now: nobody opened the file for writing or truncated it
// meanwhile.
func unlease(f *os.File) bool {
	fd := int(f.Fd())
	leases.mu.Lock()
	defer leases.mu.Unlock()
	broken := leases.held[fd]
	delete(leases.held, fd)
	if broken {
		return false // given up already (watchLeases)
	}
	t, err := unix.FcntlInt(uintptr(fd), unix.F_GETLEASE, 0)
	unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
	// During a break F_GETLEASE says what the lease is being broken to:
	// F_UNLCK.
	return err == nil && t == unix.F_RDLCK
}

// watchLeases starts the goroutine that gives up, on each SIGIO, the
// leases whose break is pending, so that their writers go on at once.
// Once per process; SIGIO is otherwise ignored, as Go does by default.
func watchLeases() {
	leases.held = make(map[int]bool)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGIO)
	go func() {
		for range sig {
			giveUpBroken()
		}
	}()
}

// giveUpBroken gives up every lease held whose break is pending.
func giveUpBroken() {
	leases.mu.Lock()
	defer leases.mu.Unlock()
	for fd, broken := range leases.held {
		if broken {
			continue
		}
		if t, err := unix.FcntlInt(uintptr(fd), unix.F_GETLEASE, 0); err == nil && t == unix.F_RDLCK {
			continue
		}
		unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
		leases.held[fd] = true
	}
}

// nvmeLocal reports whether the NVMe subsystem at dir (sysfs) reaches its
// namespaces through PCIe controllers only, of this machine: not over a
// fabric (TCP, RDMA, FC), where another machine answers the reads.
func nvmeLocal(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	controllers := 0
	for _, e := range entries {
		t, err := os.ReadFile(filepath.Join(dir, e.Name(), "transport"))
		if err != nil {
			continue // not a controller
		}
		if strings.TrimSpace(string(t)) != "pcie" {
			return false
		}
		controllers++
	}
	return controllers > 0
}
