package caller

import (
	"fmt"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// nobodyID is the kernel's overflow id, which no file should be owned by
// and no group should grant anything to.
const nobodyID = 65534

// nobody is who AsNobody runs as: no supplementary groups either.
var nobody = Cred{Uid: nobodyID, Gid: nobodyID, Groups: []uint32{}}

// AsNobody runs fn with an unprivileged identity: fsuid and fsgid the
// overflow id, no supplementary groups, and of the effective capabilities
// only CAP_SYS_ADMIN kept. It is for calls whose credentials the kernel
// records and uses later on behalf of every user of an open file:
// FUSE_DEV_IOC_BACKING_OPEN keeps a copy of them (struct fuse_backing's
// cred), and each read or write the kernel passes through to the backing
// file runs with it. Root's would lend every writer CAP_FSETID (a write
// would leave a set-user-ID bit in place, where the kernel clears it for
// an ordinary user), CAP_SYS_RESOURCE (the blocks and quota reserved for
// root) and the rest; the backing filesystem's permission checks were
// already made at the open, as the caller. The ioctl itself needs
// CAP_SYS_ADMIN, which no read or write consults.
//
// fn runs on one OS thread kept in that identity for the life of the
// process (switching a thread there and back for each call cost about
// ten system calls), one call at a time; it must make its system calls
// on the goroutine it is called on and start nothing that outlives it.
// A panic in fn is returned as an error. When clamfuse cannot switch
// credentials (not root), fn runs as clamfuse, on the calling goroutine.
func AsNobody(fn func() error) error {
	self.once.Do(probe)
	if !self.can {
		return fn()
	}
	nobodyThread.once.Do(startNobody)
	if nobodyThread.err != nil {
		return nobodyThread.err
	}
	done := make(chan error, 1)
	nobodyThread.calls <- nobodyCall{fn, done}
	return <-done
}

type nobodyCall struct {
	fn   func() error
	done chan<- error
}

// nobodyThread is the thread AsNobody runs calls on.
var nobodyThread struct {
	once  sync.Once
	calls chan nobodyCall
	err   error // the thread could not become nobody
	tid   int   // the thread's id, once started (tests: the one thread not clamfuse's)
}

// startNobody starts the thread: a goroutine locked to its OS thread for
// good (never unlocked, so the runtime never hands that thread to other
// goroutines, and ends it with the process).
func startNobody() {
	ready := make(chan error)
	nobodyThread.calls = make(chan nobodyCall)
	go func() {
		runtime.LockOSThread()
		nobodyThread.tid = unix.Gettid()
		if err := becomeNobody(); err != nil {
			ready <- err
			return // the thread, locked, exits with the goroutine
		}
		ready <- nil
		for c := range nobodyThread.calls {
			c.done <- runCall(c.fn)
		}
	}()
	if err := <-ready; err != nil {
		nobodyThread.err = fmt.Errorf("%w (%v)", syscall.EPERM, err)
	}
}

// becomeNobody gives the calling, locked thread nobody's identity.
func becomeNobody() error {
	if _, err := become(&nobody); err != nil {
		return err
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("capget: %v", err)
	}
	caps[0].Effective &= 1 << unix.CAP_SYS_ADMIN
	caps[1].Effective = 0
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("capset: %v", err)
	}
	return nil
}

// runCall runs fn, a panic returned as an error.
func runCall(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("caller: panic as nobody: %v", r)
		}
	}()
	return fn()
}
