package caller

import (
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// nobodyID is the kernel's overflow id, which no file should be owned by
// and no group should grant anything to.
const nobodyID = 65534

// nobody is who AsNobody runs as: no supplementary groups either.
var nobody = Cred{Uid: nobodyID, Gid: nobodyID, Groups: []uint32{}}

// AsNobody runs fn on a locked thread with an unprivileged identity: fsuid
// and fsgid the overflow id, no supplementary groups, and of the effective
// capabilities only CAP_SYS_ADMIN kept. It is for calls whose credentials
// the kernel records and uses later on behalf of every user of an open
// file: FUSE_DEV_IOC_BACKING_OPEN keeps a copy of them (struct
// fuse_backing's cred), and each read or write the kernel passes through
// to the backing file runs with it. Root's would lend every writer
// CAP_FSETID (a write would leave a set-user-ID bit in place, where the
// kernel clears it for an ordinary user), CAP_SYS_RESOURCE (the blocks
// and quota reserved for root) and the rest; the backing filesystem's
// permission checks were already made at the open, as the caller. The
// ioctl itself needs CAP_SYS_ADMIN, which no read or write consults.
// fn must make its system calls on the calling goroutine. When clamfuse
// cannot switch credentials (not root), fn runs as clamfuse.
func AsNobody(fn func() error) error {
	self.once.Do(probe)
	if !self.can {
		return fn()
	}
	runtime.LockOSThread()
	// A thread whose credentials cannot be put back is never handed back
	// to the scheduler: restore panics (and so does the check below).
	defer runtime.UnlockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &saved[0]); err != nil {
		return fmt.Errorf("%w (capget: %v)", syscall.EPERM, err)
	}
	groups, err := become(&nobody)
	defer func() {
		restore(groups)
		h := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		if err := unix.Capset(&h, &saved[0]); err != nil {
			panic("caller: cannot restore capabilities: " + err.Error())
		}
		var now [2]unix.CapUserData
		if err := unix.Capget(&h, &now[0]); err != nil || now != saved {
			panic("caller: capabilities not restored")
		}
	}()
	if err != nil {
		return fmt.Errorf("%w (%v)", syscall.EPERM, err)
	}
	drop := saved
	drop[0].Effective &= 1 << unix.CAP_SYS_ADMIN
	drop[1].Effective = 0
	if err := unix.Capset(&hdr, &drop[0]); err != nil {
		return fmt.Errorf("%w (capset: %v)", syscall.EPERM, err)
	}
	return fn()
}
