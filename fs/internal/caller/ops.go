package caller

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// The system calls clamfuse makes for a caller. Each either acts on one
// name in a directory descriptor (lookup, creation, removal, rename: acts
// on names by nature, and the backing filesystem checks them for the
// caller), or on a descriptor of the very inode the request is about
// (fd, an O_PATH descriptor clamfuse opened and checked): never on a name
// resolved again after a check. None follows a symlink.

// Fstatat stats name in dirfd, without following a symlink: it needs
// search permission on the directory.
func Fstatat(c Cred, dirfd int, name string, st *unix.Stat_t) error {
	return c.do(func() error { return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW) })
}

// Openat opens (or creates, with O_CREAT) name in dirfd. The caller's
// flags should hold O_NOFOLLOW.
func Openat(c Cred, dirfd int, name string, flags int, mode uint32) (int, error) {
	fd := -1
	err := c.do(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_CLOEXEC, mode)
		return err
	})
	return fd, err
}

// Reopen opens the inode fd refers to again, with flags: the backing
// filesystem checks the caller's permission on the inode (not on any
// directory leading to it). fd may be an O_PATH descriptor.
func Reopen(c Cred, fd int, flags int) (int, error) {
	nfd := -1
	err := c.do(func() (err error) {
		nfd, err = unix.Open(procPath(fd), flags|unix.O_CLOEXEC, 0)
		return err
	})
	return nfd, err
}

// Mkdirat creates the directory name in dirfd.
func Mkdirat(c Cred, dirfd int, name string, mode uint32) error {
	return c.do(func() error { return unix.Mkdirat(dirfd, name, mode) })
}

// Mknodat creates the special file name in dirfd.
func Mknodat(c Cred, dirfd int, name string, mode uint32, dev int) error {
	return c.do(func() error { return unix.Mknodat(dirfd, name, mode, dev) })
}

// Symlinkat creates name in dirfd, a symlink to target.
func Symlinkat(c Cred, target string, dirfd int, name string) error {
	return c.do(func() error { return unix.Symlinkat(target, dirfd, name) })
}

// Link gives the inode fd (an O_PATH descriptor, possibly of a symlink)
// the new name name in dirfd. Through /proc, which needs no
// CAP_DAC_READ_SEARCH as AT_EMPTY_PATH would; fs.protected_hardlinks is
// checked for the caller as for a link(2) of its own.
func Link(c Cred, fd int, dirfd int, name string) error {
	return c.do(func() error {
		return unix.Linkat(unix.AT_FDCWD, procPath(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
	})
}

// Unlinkat removes name from dirfd (flags: 0 or AT_REMOVEDIR).
func Unlinkat(c Cred, dirfd int, name string, flags int) error {
	return c.do(func() error { return unix.Unlinkat(dirfd, name, flags) })
}

// Renameat renames oldname in olddirfd to newname in newdirfd, with
// renameat2(2)'s flags (0 for rename(2)): RENAME_NOREPLACE,
// RENAME_EXCHANGE, RENAME_WHITEOUT (which needs CAP_MKNOD, dropped with a
// non-zero fsuid, and a backing filesystem that has whiteouts).
func Renameat(c Cred, olddirfd int, oldname string, newdirfd int, newname string, flags uint) error {
	if flags == 0 {
		return c.do(func() error { return unix.Renameat(olddirfd, oldname, newdirfd, newname) })
	}
	return c.do(func() error { return unix.Renameat2(olddirfd, oldname, newdirfd, newname, flags) })
}

// Chmod sets the mode of the inode fd. It refuses a symlink (EOPNOTSUPP,
// as fchmodat(AT_SYMLINK_NOFOLLOW) does): through /proc the mode would
// be set on whatever the link leads to. isLink is the caller's fstat of fd.
func Chmod(c Cred, fd int, isLink bool, mode uint32) error {
	if isLink {
		return syscall.EOPNOTSUPP
	}
	return c.do(func() error { return unix.Chmod(procPath(fd), mode) })
}

// Chown sets the owner and group of the inode fd (-1 leaves one alone);
// a symlink's own.
func Chown(c Cred, fd int, uid, gid int) error {
	return c.do(func() error { return unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH) })
}

// Utimens sets the access and modification times of the inode fd; a
// symlink's own.
func Utimens(c Cred, fd int, ts []unix.Timespec) error {
	return c.do(func() error { return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH) })
}

// Truncate sets the size of the inode fd, which the caller must be allowed
// to open for writing. The open never blocks: EWOULDBLOCK while a lease
// on the file is being broken, unless wait, when it waits for that as
// truncate(2) does (fd must then be a regular file's: no FIFO).
func Truncate(c Cred, fd int, size int64, wait bool) error {
	return c.do(func() error {
		flags := unix.O_WRONLY | unix.O_CLOEXEC
		if !wait {
			flags |= unix.O_NONBLOCK
		}
		wfd, err := unix.Open(procPath(fd), flags, 0)
		if err != nil {
			return err
		}
		defer unix.Close(wfd)
		return unix.Ftruncate(wfd, size)
	})
}

// Getxattr reads the extended attribute name of the inode fd into buf
// (nil: only its size). Through the /proc link, which the calls follow to
// the inode itself and no further: a symlink's own attributes, as the
// l* calls would give for its name (the l* calls on the link itself would
// act on the /proc entry).
func Getxattr(c Cred, fd int, name string, buf []byte) (int, error) {
	n := 0
	err := c.do(func() (err error) {
		n, err = unix.Getxattr(procPath(fd), name, buf)
		return err
	})
	return n, err
}

// Setxattr sets the extended attribute name of the inode fd.
func Setxattr(c Cred, fd int, name string, value []byte, flags int) error {
	return c.do(func() error { return unix.Setxattr(procPath(fd), name, value, flags) })
}

// Removexattr removes the extended attribute name of the inode fd.
func Removexattr(c Cred, fd int, name string) error {
	return c.do(func() error { return unix.Removexattr(procPath(fd), name) })
}

// Access reports whether the caller may access the inode fd as mode says
// (unix.W_OK...), with its filesystem ids, as an open would check.
func Access(c Cred, fd int, mode uint32) error {
	return c.do(func() error {
		return unix.Faccessat2(unix.AT_FDCWD, procPath(fd), mode, unix.AT_EACCESS)
	})
}
