package fusefs

// clamfuse: the attributes of a lookup's entry (block "lookup attr" of
// serve.go).

import (
	"context"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// lookupAttr fills attr, the attributes of the entry a LOOKUP (or a
// CREATE, MKDIR, ...) answers with, for n: upstream asks n.Attr, always;
// here attributes the request's handler filled itself (attr.Inode set),
// from the very stat that found the entry, are kept as they are, so a
// lookup costs the backing filesystem one stat, not two.
func lookupAttr(ctx context.Context, n Node, attr *fuse.Attr) error {
	if attr.Inode != 0 {
		return nil
	}
	return nodeAttr(ctx, n, attr)
}
