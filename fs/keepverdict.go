package fs

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// keepVerdict asks the gate to carry the verdict of a regular file in
// state st over a change of its metadata alone that the caller is about
// to make through the mount (cache.Gate.KeepVerdict): a rename, an
// exchange, a new hard link, the removal of one name of several, chmod,
// chown, utimes. The file is pfd (O_PATH) when pfd >= 0, else name
// beneath dirfd, opened O_PATH without following a symlink and checked
// to be st's inode only when the gate asks for it. done follows the
// change, whether it was made or failed.
func (f *FS) keepVerdict(st *unix.Stat_t, dirfd int, name string, pfd int) (done func()) {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return func() {}
	}
	return f.opts.Gate.KeepVerdict(st, func() (*os.File, error) {
		id := inoKey{st.Dev, st.Ino}
		if pfd < 0 {
			if pfd = victimFD(dirfd, name, st); pfd < 0 {
				return nil, syscall.ENOENT
			}
			defer unix.Close(pfd)
		}
		fd, err := openOwn(pfd, &id)
		if err != nil {
			return nil, err
		}
		return osFile(fd, name), nil
	})
}
