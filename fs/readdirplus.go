package fs

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// READDIRPLUS: the kernel gets a directory's entries with their nodes
// and attributes in one reply, and need not LOOKUP each name that a
// listing then stats (`ls -l`, `find | xargs stat`). Each entry sent is
// a lookup the kernel counts, as from Lookup, and balances with FORGET;
// its node is made by FS.node as Lookup's is (a directory registered
// with the watcher through the listed directory's descriptor).
//
// Only names whose inode has no node yet are sent with one: for an inode
// the kernel knows already, a READDIRPLUS entry would only refresh what it
// caches, and the kernel would forget the inode's cached POSIX ACLs on
// the way (fuse_direntplus_link calls forget_all_cached_acls), so that
// the next `ls -l` asked GETXATTR system.posix_acl_access for every file
// again, where a READDIR costs none. Such names are listed alone (node
// ID 0, which the kernel takes as "no attributes": it keeps what it has,
// and LOOKUPs the name if it has no dentry for it). The inode number
// getdents gives, on the directory's device, finds the node without a
// stat; a name on another filesystem (a mount point) misses and is
// stat'ed.
//
// Lookup acts as the caller, who must be allowed to search the
// directory: a listing gives nodes only when the caller may search the
// directory it lists, checked once per reply, and else lists the names
// alone (the kernel then LOOKUPs each as the caller, and fails).

// ReaddirPlus is when the kernel is asked for READDIRPLUS.
type ReaddirPlus int

const (
	// ReaddirPlusAuto leaves it to the kernel's heuristics
	// (FUSE_READDIRPLUS_AUTO): the first reply of a listing, and the
	// next ones only when the names listed were looked up meanwhile.
	ReaddirPlusAuto ReaddirPlus = iota
	// ReaddirPlusOff never asks: READDIR, then a LOOKUP per name used.
	ReaddirPlusOff
	// ReaddirPlusOn asks for every reply of every listing.
	ReaddirPlusOn
)

func (r ReaddirPlus) String() string {
	switch r {
	case ReaddirPlusAuto:
		return "auto"
	case ReaddirPlusOff:
		return "off"
	case ReaddirPlusOn:
		return "on"
	}
	return fmt.Sprintf("ReaddirPlus(%d)", int(r))
}

// ParseReaddirPlus parses "auto", "off" or "on".
func ParseReaddirPlus(s string) (ReaddirPlus, error) {
	for _, r := range []ReaddirPlus{ReaddirPlusAuto, ReaddirPlusOff, ReaddirPlusOn} {
		if r.String() == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("readdirplus %q: want auto, off or on", s)
}

// mountOptions are the INIT flags that ask for r.
func (r ReaddirPlus) mountOptions() []fuse.MountOption {
	switch r {
	case ReaddirPlusAuto:
		return []fuse.MountOption{fuse.RequestInitFlags(fuse.InitDoReaddirplus | fuse.InitReaddirplusAuto)}
	case ReaddirPlusOn:
		return []fuse.MountOption{fuse.RequestInitFlags(fuse.InitDoReaddirplus)}
	}
	return nil
}

// known reports whether the inode k has a node.
func (f *FS) known(k inoKey) bool {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	return f.nodes.get(k) != nil || k == f.rootN.id
}

// addNodes gives the entries ents of the READDIRPLUS req, just read from
// d, their nodes and attributes, as Lookup would for the same caller.
// An entry gone or replaced since it was read goes with what its name
// leads to now, or without a node.
func (d *dirHandle) addNodes(req fusefs.DirRead, ents []fusefs.DirentPlus) {
	dir, ok := req.Dir.(*Node)
	if !ok || req.Header == nil || len(ents) == 0 {
		return
	}
	if caller.Access(d.fsys.cred(req.Header), d.fd, unix.X_OK) != nil {
		return // the names only: the kernel LOOKUPs them as the caller
	}
	valid := d.fsys.entryValid(dir)
	attrs := make([]fuse.Attr, len(ents))
	for i := range ents {
		e := &ents[i]
		if e.Name == "." || e.Name == ".." || d.fsys.known(inoKey{dir.id.dev, e.Inode}) {
			continue
		}
		seq := d.fsys.watch.batchesTaken()
		var st unix.Stat_t
		if unix.Fstatat(d.fd, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		d.fsys.meet(d.fd, e.Name, &st)
		child := d.fsys.node(d.fd, &st, dir, e.Name)
		e.Node = child
		fillAttr(&attrs[i], &st, d.fsys.attrValid(&st))
		e.Attr, e.EntryValid = &attrs[i], valid
		if !d.fsys.settled(seq, d.fd, dir, e.Name, child) {
			e.EntryValid = 0 // changed already: see watch.go
		}
	}
}
