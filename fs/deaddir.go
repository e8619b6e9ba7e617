package fs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// A directory removed behind the mount, on a backing filesystem whose
// inodes clamfuse's descriptors do not pin.
//
// clamfuse keeps a descriptor of each directory the kernel knows (see
// dirCache). On a local filesystem that descriptor pins the inode: the
// number of a directory removed is not given to another while it is
// open (and one removed through the mount leaves the table at once:
// removedDir). On a network or FUSE filesystem it pins nothing on the
// server, and the number of a directory removed behind the mount can
// come back at once with a new one (go-fuse's loopback over ext4 does):
// the lookup that met the new directory found the removed one's node by
// that number, and its descriptor, through which every name in the new
// directory was missing (ENOENT) until the kernel forgot the old node.
// So on such a filesystem (remoteFS), a lookup that finds a directory
// whose node holds a descriptor first checks it: a descriptor of a
// directory removed (no link left, or gone: ESTALE, ENOENT) makes the
// node leave the table, and the new directory gets a node of its own.
// Elsewhere this costs a look in a map of devices per directory met.

// unpinned are the devices, by number, on whose filesystem a descriptor
// does not pin the inode (remoteFS): true, or false.
type unpinned struct{ devs sync.Map }

// dev reports whether the filesystem of directory dirfd, device dev,
// pins nothing (found once per device).
func (u *unpinned) dev(dirfd int, dev uint64) bool {
	if v, ok := u.devs.Load(dev); ok {
		return v.(bool)
	}
	var sfs unix.Statfs_t
	if unix.Fstatfs(dirfd, &sfs) != nil {
		return false // next time
	}
	is := remoteFS[int64(sfs.Type)]
	u.devs.Store(dev, is)
	return is
}

// dropDeadDir makes the node of the directory st, found in parent open
// at dirfd, leave the table if it holds a descriptor of a directory
// removed meanwhile, on a filesystem that does not pin inodes (above).
func (f *FS) dropDeadDir(dirfd int, st *unix.Stat_t, parent *Node) {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || parent.id.dev != st.Dev || !f.unpinned.dev(dirfd, st.Dev) {
		return
	}
	n := f.lookupID(st)
	if n == nil || n.typ != unix.S_IFDIR || n.isRoot() || !n.heldRemoved() {
		return
	}
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	n.links.reset()
	f.nodes.delete(n) // only if n is still the node of its number
}

// heldRemoved reports whether the descriptor the directory n holds, if
// any, is of a directory removed.
func (n *Node) heldRemoved() bool {
	s := n.st.Load()
	if s == nil {
		return false
	}
	s.fdMu.RLock()
	defer s.fdMu.RUnlock()
	if !s.hasFD {
		return false
	}
	var st unix.Stat_t
	err := unix.Fstat(int(s.fd), &st)
	return err != nil || st.Nlink == 0
}
