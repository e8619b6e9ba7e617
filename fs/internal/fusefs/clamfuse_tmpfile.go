package fusefs

// clamfuse: O_TMPFILE (fuse.TmpfileRequest; block "requests" of
// handleRequest).

import (
	"context"
	"syscall"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// NodeTmpfiler is a directory that can create unnamed files in itself,
// for open(2) with O_TMPFILE. A directory that is not gets ENOSYS, and the
// kernel fails every O_TMPFILE open on the mount with EOPNOTSUPP.
type NodeTmpfiler interface {
	// Tmpfile creates and opens an unnamed regular file in the
	// receiver, as Create does a named one: the Node returned gets a
	// NodeID and a lookup, as from Create, and the Handle is the open
	// file. The file gets a name only by a later Link of its Node
	// (linkat(2)), if req.Flags has no O_EXCL.
	Tmpfile(ctx context.Context, req *fuse.TmpfileRequest, resp *fuse.CreateResponse) (Node, Handle, error)
}

func (c *Server) tmpfile(ctx context.Context, node Node, snode *serveNode, r *fuse.TmpfileRequest, done func(resp interface{})) error {
	n, ok := node.(NodeTmpfiler)
	if !ok {
		return syscall.ENOSYS
	}
	s := &fuse.CreateResponse{}
	initLookupResponse(&s.LookupResponse)
	n2, h2, err := n.Tmpfile(ctx, r, s)
	if err != nil {
		return err
	}
	if err := c.saveLookup(ctx, &s.LookupResponse, snode, r.Name, n2); err != nil {
		return err
	}
	s.Handle = c.saveHandle(h2)
	done(s)
	r.Respond(s)
	return nil
}
