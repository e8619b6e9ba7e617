package fuse

// clamfuse: RENAME2 (protocol 7.23), renameat2(2) with flags.

import (
	"bytes"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RenameFlags are renameat2(2)'s flags, in RenameRequest.Flags.
type RenameFlags uint32

const (
	// Fail with EEXIST rather than replace the new name.
	RenameNoReplace RenameFlags = unix.RENAME_NOREPLACE
	// Swap the two names, which must both exist.
	RenameExchange RenameFlags = unix.RENAME_EXCHANGE
	// Leave a whiteout (a character device 0:0) at the old name, for
	// overlay file systems; the kernel allows it only to callers with
	// CAP_MKNOD.
	RenameWhiteout RenameFlags = unix.RENAME_WHITEOUT
)

var renameFlagNames = []flagName{
	{uint32(RenameNoReplace), "RenameNoReplace"},
	{uint32(RenameExchange), "RenameExchange"},
	{uint32(RenameWhiteout), "RenameWhiteout"},
}

func (fl RenameFlags) String() string {
	return flagString(uint32(fl), renameFlagNames)
}

// rename2In is struct fuse_rename2_in.
type rename2In struct {
	Newdir uint64
	Flags  uint32
	_      uint32
}

// rename2Request decodes a RENAME2: fuse_rename2_in, then "old\0new\0",
// as RENAME (which the kernel sends when there are no flags).
func rename2Request(m *message) Request {
	in := (*rename2In)(m.data())
	if m.len() < unsafe.Sizeof(*in) {
		return nil
	}
	oldNew := m.bytes()[unsafe.Sizeof(*in):]
	if len(oldNew) < 4 || oldNew[len(oldNew)-1] != '\x00' {
		return nil
	}
	i := bytes.IndexByte(oldNew, '\x00')
	return &RenameRequest{
		Header:  m.Header(),
		NewDir:  NodeID(in.Newdir),
		OldName: string(oldNew[:i]),
		NewName: string(oldNew[i+1 : len(oldNew)-1]),
		Flags:   RenameFlags(in.Flags),
	}
}
