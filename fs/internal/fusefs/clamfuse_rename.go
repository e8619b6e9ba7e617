package fusefs

// clamfuse: renames with renameat2(2) flags (block "rename flags" of
// handleRequest).

import (
	"syscall"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// NodeRenameFlagger is a NodeRenamer whose Rename honours
// fuse.RenameRequest.Flags (renameat2's RENAME_NOREPLACE, _EXCHANGE,
// _WHITEOUT). A rename with flags reaches only such a node, and only with
// flags it says it handles: one with others fails with EINVAL. To any
// other NodeRenamer fusefs answers a rename with flags ENOSYS, and the
// kernel then fails it, and every later one with flags on the mount,
// with EINVAL, without asking (as before fuse parsed RENAME2): a Rename
// unaware of the flags would replace what RENAME_NOREPLACE protects.
type NodeRenameFlagger interface {
	NodeRenamer
	// RenameFlags are the flags Rename handles.
	RenameFlags() fuse.RenameFlags
}

// renameFlags decides whether the rename r may reach node's Rename.
func renameFlags(node Node, r *fuse.RenameRequest) error {
	if r.Flags == 0 {
		return nil
	}
	n, ok := node.(NodeRenameFlagger)
	if !ok {
		return syscall.ENOSYS
	}
	if r.Flags&^n.RenameFlags() != 0 {
		return syscall.EINVAL
	}
	return nil
}
