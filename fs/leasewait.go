package fs

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
)

// Opens that break a lease.
//
// An open for writing or truncating of a file on which someone holds a
// read lease (the gate does, on a file clamd judges itself: see
// cache/lease.go) waits until the lease is given up, which the gate does
// at once; but with O_NONBLOCK, which clamfuse adds to every open of a
// backing file (see openRegular), it fails with EWOULDBLOCK instead. So
// that any user who may read a file cannot make its writers' opens fail
// by opening it through the mount, such an open is made again without
// O_NONBLOCK: through an O_PATH descriptor of the name, once it shows a
// regular file (the inode want), so that it cannot block on a FIFO. Even
// when the caller asked for O_NONBLOCK (coreutils' touch and truncate
// do, against FIFOs, as clamfuse does): on a regular file it means only
// this, and the wait for the gate's leases is short; one held by someone
// else is waited for up to /proc/sys/fs/lease-break-time.
//
// Each such wait holds a thread, blocked in open(2): a user who holds a
// lease of their own on a file of theirs could otherwise make clamfuse
// start threads until the Go runtime gives up (10 000). So at most
// leaseWaitsPerUser opens of each uid, and leaseWaitsMax in all, wait at
// once; past that an open fails with EWOULDBLOCK, as it did before.

const leaseWaitsPerUser, leaseWaitsMax = 16, 256

// leaseWaits counts the opens that wait for a lease's break.
var leaseWaits = struct {
	mu    sync.Mutex
	byUID map[uint32]int
	all   int
}{byUID: make(map[uint32]int)}

// leaseWaitStarts reports whether an open of uid may wait for a lease's
// break now; done must follow when it does.
func leaseWaitStarts(uid uint32) (done func(), ok bool) {
	w := &leaseWaits
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.all >= leaseWaitsMax || w.byUID[uid] >= leaseWaitsPerUser {
		return nil, false
	}
	w.all++
	w.byUID[uid]++
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.all--
		if w.byUID[uid]--; w.byUID[uid] == 0 {
			delete(w.byUID, uid)
		}
	}, true
}

// waitsForLease reports whether an open with flags would wait for a
// lease to be given up, without O_NONBLOCK.
func waitsForLease(flags int) bool {
	return flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
}

// reopenLeased opens the inode fd (O_PATH or not) refers to again as the
// caller c, with flags, if it is a regular file (and want, when not nil);
// else ESTALE. The open is made without O_NONBLOCK, which is set after
// it when flags hold it: it may wait for a lease's break.
func reopenLeased(c caller.Cred, fd int, flags int, want *inoKey, o *opened) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || (want != nil && (inoKey{st.Dev, st.Ino}) != *want) {
		return -1, syscall.ESTALE
	}
	done, ok := leaseWaitStarts(c.Uid)
	if !ok {
		return -1, syscall.EWOULDBLOCK
	}
	nfd, err := caller.Reopen(c, fd, flags&^unix.O_NONBLOCK)
	done()
	if err != nil {
		return -1, err
	}
	if flags&unix.O_NONBLOCK != 0 {
		if _, err := unix.FcntlInt(uintptr(nfd), unix.F_SETFL, flags); err != nil {
			unix.Close(nfd)
			return -1, err
		}
	}
	return checkRegular(nfd, flags, want, o)
}
