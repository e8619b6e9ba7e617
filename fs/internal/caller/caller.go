// Package caller makes the system calls clamfuse makes on behalf of the
// user whose FUSE request it serves, with that user's filesystem
// credentials: fsuid, fsgid and supplementary groups. With an fsuid other
// than 0 the kernel drops the filesystem capabilities (CAP_DAC_OVERRIDE,
// CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID, CAP_CHOWN, CAP_MKNOD...) from
// the effective set, so the backing filesystem decides each call exactly as
// for that user: mode bits, POSIX ACLs, sticky directories, ownership,
// fs.protected_hardlinks, the chown rules; and what the call creates
// belongs to the user (and the group of a set-group-ID directory).
//
// Each call runs on a locked OS thread whose credentials are switched with
// the raw per-thread setgroups, setfsgid and setfsuid system calls (never
// Go's syscall.Setuid family, which changes every thread of the process),
// then switched back to clamfuse's own before the thread is unlocked; if
// switching back fails the process panics rather than hand a thread with
// a user's credentials back to the scheduler. When clamfuse does not run as
// root it cannot switch: calls then run with its own credentials.
//
// Model: gocryptfs internal/syscallcompat (asUser, OpenatUser), and
// fuse-overlayfs's per-request credential switch.
package caller

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"unsafe"
)

// Cred is who a call is made for.
type Cred struct {
	Uid, Gid uint32
	Groups   []uint32 // supplementary groups; see Cache.Cred
}

// self is clamfuse's own filesystem credentials, recorded once; a switched
// thread is always returned to exactly these.
var self struct {
	once    sync.Once
	can     bool // credentials can be switched (clamfuse runs as root)
	fsuid   uint32
	fsgid   uint32
	groups  []uint32
	why     string // why not, when !can
	probeTo uint32 // the id the probe switched to
}

// noID is -1 as a uid_t: setfsuid(-1) and setfsgid(-1) change nothing and
// return the current id, which is how a switch is verified.
const noID = ^uint32(0)

func setfsuid(uid uint32) uint32 {
	r, _, _ := syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(uid), 0, 0)
	return uint32(r)
}

func setfsgid(gid uint32) uint32 {
	r, _, _ := syscall.RawSyscall(syscall.SYS_SETFSGID, uintptr(gid), 0, 0)
	return uint32(r)
}

// setgroups sets the supplementary groups of the calling thread only.
func setgroups(gids []uint32) error {
	var p unsafe.Pointer
	if len(gids) > 0 {
		p = unsafe.Pointer(&gids[0])
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(gids)), uintptr(p), 0); e != 0 {
		return e
	}
	return nil
}

func getgroups() ([]uint32, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_GETGROUPS, 0, 0, 0)
	if e != 0 {
		return nil, e
	}
	if n == 0 {
		return nil, nil
	}
	gids := make([]uint32, n)
	n, _, e = syscall.RawSyscall(syscall.SYS_GETGROUPS, n, uintptr(unsafe.Pointer(&gids[0])), 0)
	if e != 0 {
		return nil, e
	}
	return gids[:n], nil
}

// probe records clamfuse's own credentials and whether it can switch them,
// by switching a locked thread to the probe id and back.
func probe() {
	s := &self
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s.fsuid, s.fsgid = setfsuid(noID), setfsgid(noID)
	var err error
	if s.groups, err = getgroups(); err != nil {
		s.why = fmt.Sprintf("getgroups: %v", err)
		return
	}
	slices.Sort(s.groups) // as Cache.Cred's are, for slices.Equal
	if s.fsuid != 0 {
		s.why = fmt.Sprintf("not running as root (fsuid %d)", s.fsuid)
		return
	}
	s.probeTo = 65534 // nobody: any id other than 0 will do
	c := Cred{Uid: s.probeTo, Gid: s.probeTo}
	groups, err := become(&c)
	restore(groups)
	if err != nil {
		s.why = err.Error()
		return
	}
	s.can = true
}

// Switching reports whether calls run with the caller's credentials, and
// if not, why.
func Switching() (bool, string) {
	self.once.Do(probe)
	return self.can, self.why
}

// become gives the calling (locked) thread c's filesystem credentials. It
// reports whether it changed the supplementary groups (then restore must
// put them back), even when it fails later.
func become(c *Cred) (groups bool, err error) {
	if c.switchesGroups() {
		if err := setgroups(c.Groups); err != nil {
			return false, fmt.Errorf("setgroups: %w", err)
		}
		groups = true
	}
	if c.Gid != self.fsgid {
		setfsgid(c.Gid)
		if got := setfsgid(noID); got != c.Gid {
			return groups, fmt.Errorf("setfsgid(%d): still %d", c.Gid, got)
		}
	}
	if c.Uid != self.fsuid {
		setfsuid(c.Uid)
		if got := setfsuid(noID); got != c.Uid {
			return groups, fmt.Errorf("setfsuid(%d): still %d", c.Uid, got)
		}
	}
	return groups, nil
}

// switchesGroups reports whether a switch to c sets supplementary groups:
// not for root, whose capabilities decide for it, and not when they are
// clamfuse's own already.
func (c *Cred) switchesGroups() bool {
	return c.Uid != 0 && !slices.Equal(c.Groups, self.groups)
}

// restore gives the calling thread clamfuse's own credentials back (its
// groups too if groups), or panics: a thread must never go back to the
// scheduler as someone else.
func restore(groups bool) {
	if setfsuid(self.fsuid); setfsuid(noID) != self.fsuid {
		panic("caller: cannot restore fsuid")
	}
	if setfsgid(self.fsgid); setfsgid(noID) != self.fsgid {
		panic("caller: cannot restore fsgid")
	}
	if !groups {
		return
	}
	if err := setgroups(self.groups); err != nil {
		panic("caller: cannot restore supplementary groups: " + err.Error())
	}
}

// needsSwitch reports whether calls for c must switch credentials: not
// when clamfuse cannot, nor for a caller with clamfuse's own ids.
func (c *Cred) needsSwitch() bool {
	self.once.Do(probe)
	return self.can && (c.Uid != self.fsuid || c.Gid != self.fsgid)
}

// do runs fn with c's credentials. fn must make its system calls on the
// calling goroutine and start nothing that outlives it.
func (c *Cred) do(fn func() error) error {
	if !c.needsSwitch() {
		return fn()
	}
	runtime.LockOSThread()
	// Deferred, so that even a panic in fn, should the FUSE server
	// recover it, leaves the thread as clamfuse before it is unlocked.
	defer runtime.UnlockOSThread()
	groups, err := become(c)
	defer restore(groups)
	if err != nil {
		return fmt.Errorf("%w (%v)", syscall.EPERM, err)
	}
	return fn()
}

// procPath names the inode open as fd for path-based calls: the link in
// /proc/self/fd leads to the inode itself, whatever its names are now.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
