package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// How serving ends. The kernel ends the connection when the mount is
// gone, and when it is aborted through fusectl; the read of /dev/fuse
// fails the same way either way (ENODEV; on 6.18 a lazily detached
// mount's connection sometimes ends with ECONNABORTED when its last file
// closes, without any abort). What tells them apart is the mount table:
// an unmount removes the mount from it before the connection ends, an
// abort leaves it there, dead. Then clamfuse exits with an error (so
// that systemd's Restart=on-failure starts it again, which clears the
// dead mount: CheckPaths) and leaves the dead mount in place meanwhile:
// it fails every access (ENOTCONN) rather than expose the directory
// under it.

// device identifies the mount's superblock.
type device struct{ major, minor uint32 }

// deviceAt is the device of name in dirfd (dirfd itself if name is ""),
// not following a last symlink: for a mountpoint just mounted, the
// mount's. The stat asks nothing of a FUSE server (AT_STATX_DONT_SYNC,
// no field asked: the device is the superblock's).
func deviceAt(dirfd int, name string) (device, error) {
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_DONT_SYNC
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, name, flags, 0, &stx); err != nil {
		return device{}, err
	}
	return device{stx.Dev_major, stx.Dev_minor}, nil
}

// errAborted is serving's end while the mount is still in the table.
var errAborted = errors.New("the FUSE connection was aborted (fusectl); the dead mount stays until clamfuse starts again")

// servingEnded is what serving's end means: nil for an unmount,
// errAborted for an abort, the error otherwise. mounted reports whether
// the mount is still in the mount table.
func servingEnded(err error, mounted func() bool) error {
	if err != nil && !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENODEV) {
		return err
	}
	if mounted() {
		return errAborted
	}
	return nil
}

// inMountTable reports whether a mount of dev is in this mount
// namespace's table; if the table cannot be read, it says so (the end is
// then an error, not an unmount).
func inMountTable(dev device) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return true
	}
	defer f.Close()
	found, err := deviceIn(f, dev)
	return found || err != nil
}

// deviceIn reports whether a line of mountinfo r names dev (the third
// field, major:minor).
func deviceIn(r io.Reader, dev device) (bool, error) {
	want := fmt.Sprintf("%d:%d", dev.major, dev.minor)
	found := false
	err := eachMount(r, func(fields []string) bool {
		found = fields[2] == want
		return !found
	})
	return found, err
}
