package fs

import (
	"encoding/binary"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// Low-level access to the backing tree. Every path is resolved beneath the
// root descriptor: directories with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so neither a symlink nor ".." can lead out of the
// backing root, and the last component with *at calls that do not follow
// symlinks.

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openBeneath opens rel (slash-separated, relative to root, "" for root)
// with flags. The caller closes the result.
func openBeneath(root int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveFlags})
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			// openat2 asks to retry when a rename raced the walk.
			continue
		}
		return fd, err
	}
}

func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func timespec(ts unix.Timespec) time.Time { return time.Unix(ts.Sec, ts.Nsec) }

// fileMode converts a stat mode to the os.FileMode bazil expects.
func fileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= os.ModeDir
	case unix.S_IFLNK:
		mode |= os.ModeSymlink
	case unix.S_IFIFO:
		mode |= os.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= os.ModeSocket
	case unix.S_IFCHR:
		mode |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		mode |= os.ModeDevice
	}
	if m&unix.S_ISUID != 0 {
		mode |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// unixMode converts permission bits of an os.FileMode back to stat bits.
func unixMode(m os.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		mode |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		mode |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		mode |= unix.S_ISVTX
	}
	return mode
}

// fileType returns the S_IFMT bits for the type in an os.FileMode.
func fileType(m os.FileMode) uint32 {
	switch {
	case m&os.ModeDir != 0:
		return unix.S_IFDIR
	case m&os.ModeSymlink != 0:
		return unix.S_IFLNK
	case m&os.ModeNamedPipe != 0:
		return unix.S_IFIFO
	case m&os.ModeSocket != 0:
		return unix.S_IFSOCK
	case m&os.ModeCharDevice != 0:
		return unix.S_IFCHR
	case m&os.ModeDevice != 0:
		return unix.S_IFBLK
	}
	return unix.S_IFREG
}

func fillAttr(a *fuse.Attr, st *unix.Stat_t, valid time.Duration) {
	a.Valid = valid
	a.Inode = st.Ino
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Atime = timespec(st.Atim)
	a.Mtime = timespec(st.Mtim)
	a.Ctime = timespec(st.Ctim)
	a.Mode = fileMode(st.Mode)
	a.Nlink = uint32(st.Nlink)
	a.Uid = st.Uid
	a.Gid = st.Gid
	a.Rdev = uint32(st.Rdev)
	a.BlockSize = uint32(st.Blksize)
}

func direntType(t uint8) fuse.DirentType {
	switch t {
	case unix.DT_DIR:
		return fuse.DT_Dir
	case unix.DT_REG:
		return fuse.DT_File
	case unix.DT_LNK:
		return fuse.DT_Link
	case unix.DT_FIFO:
		return fuse.DT_FIFO
	case unix.DT_SOCK:
		return fuse.DT_Socket
	case unix.DT_CHR:
		return fuse.DT_Char
	case unix.DT_BLK:
		return fuse.DT_Block
	}
	return fuse.DT_Unknown
}

// readDirents reads every entry of the open directory fd, "." and ".."
// included, as the kernel lists them.
func readDirents(fd int) ([]fuse.Dirent, error) {
	var out []fuse.Dirent
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		b := buf[:n]
		for len(b) >= 19 {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			ino := binary.NativeEndian.Uint64(b[0:8])
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			typ := b[18]
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			out = append(out, fuse.Dirent{Inode: ino, Type: direntType(typ), Name: string(name)})
			b = b[reclen:]
		}
	}
}
