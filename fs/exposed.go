package fs

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Writers outside the mount.
//
// A write through the mount is seen at once (cache.Gate.Modified); a
// write made directly in the backing directory is seen through the
// file's state (size, times) and, for files up to cache.verify_max_size,
// its contents. Over that size a write that keeps size and times (a
// shared mapping of the backing file) is not seen. clamfuse warns at
// start when the backing directory is reachable outside the mount and
// writable by users other than root.

// maxExposedEntries bounds the entries OutsideWriters looks at.
const maxExposedEntries = 10000

// OutsideWriters says why users other than root may change files of the
// backing directory src without going through the mount at dst, or ""
// when it sees no way: src is dst (an in-place mount, where the path shows
// the mount), or some directory on the way to src lets no other user
// through, or nothing in src's first two levels is writable by another
// user. It reads owners and mode bits (not ACLs) of at most
// maxExposedEntries entries: a warning, not a proof.
func OutsideWriters(src, dst string) string {
	if src == dst {
		return ""
	}
	for p := src; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || !othersMay(&st, 0o1) {
			return ""
		}
		if p == "/" || p == "." {
			break
		}
	}
	seen := 0
	var walk func(dir string, depth int) string
	walk = func(dir string, depth int) string {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return ""
		}
		for _, e := range entries {
			if seen++; seen > maxExposedEntries {
				return ""
			}
			p := filepath.Join(dir, e.Name())
			var st unix.Stat_t
			if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK {
				continue
			}
			if why := writableBy(p, &st); why != "" {
				return why
			}
			if e.IsDir() && depth < 2 {
				if why := walk(p, depth+1); why != "" {
					return why
				}
			}
		}
		return ""
	}
	var st unix.Stat_t
	if unix.Stat(src, &st) != nil {
		return ""
	}
	if why := writableBy(src, &st); why != "" {
		return why
	}
	return walk(src, 1)
}

// othersMay reports whether a user other than root may do bit (0o1
// search or execute, 0o2 write) on st: its owner, its group (unless
// root's), or everyone.
func othersMay(st *unix.Stat_t, bit uint32) bool {
	return st.Uid != 0 || st.Mode&bit != 0 || st.Mode&(bit<<3) != 0 && st.Gid != 0
}

// writableBy says who other than root may write p (stat st), or "".
func writableBy(p string, st *unix.Stat_t) string {
	switch {
	case st.Uid != 0:
		return fmt.Sprintf("%s belongs to uid %d", p, st.Uid)
	case st.Mode&0o002 != 0:
		return fmt.Sprintf("%s is writable by every user", p)
	case st.Mode&0o020 != 0 && st.Gid != 0:
		return fmt.Sprintf("%s is writable by group %d", p, st.Gid)
	}
	return ""
}
