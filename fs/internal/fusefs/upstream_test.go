package fusefs

import (
	"path/filepath"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/upstream"
)

// replaced records the upstream text each marked block of serve.go
// replaces.
var replaced = map[string]string{
	// A node that keeps its own NodeID (clamfuse_nodeid.go).
	"root id":                 "\ts.nodeRef[root] = 1\n",
	"root table made":         "",
	"save node id":            "\tif id, ok := c.nodeRef[node]; ok {\n",
	"save node record id":     "\tc.nodeRef[node] = id\n",
	"drop node id":            "\t\tdelete(c.nodeRef, snode.node)\n",
	"invalidate node id":      "\tid, ok := s.nodeRef[node]\n",
	"invalidate entry id":     "\tid, ok := s.nodeRef[parent]\n",
	"notify delete parent id": "\tparentID, parentOk := s.nodeRef[parent]\n",
	"notify delete child id":  "\t\t\tchildID, childOk = s.nodeRef[child]\n",
	"notify store id":         "\tid, ok := s.nodeRef[node]\n",
	"notify retrieve id":      "\tid, ok := s.nodeRef[node]\n",
	"package":                 "package fs // import \"bazil.org/fuse/fs\"\n",
	"requests":                "",
	"readdir":                 "",
	"rename flags":            "",
	// A READ's data read into the reply's own buffer (fuse's ResponseData).
	"read in place": "\t\ts := &fuse.ReadResponse{Data: make([]byte, 0, r.Size)}\n",
	// InvalidateNodeAttr: upstream's offset 0 invalidated the data too.
	"invalidate attr": "\treturn s.invalidateNode(node, 0, 0)\n",
	"imports":         "\t\"bazil.org/fuse\"\n\t\"bazil.org/fuse/fuseutil\"\n",
	// Attributes a lookup filled itself are not asked again
	// (clamfuse_lookupattr.go).
	"lookup attr": "\tif err := nodeAttr(ctx, n2, &s.Attr); err != nil {\n\t\treturn err\n\t}\n",
	// The request loop of upstream's Serve.
	"request loop": `	for {
		req, err := s.conn.ReadRequest()
		if err != nil {
			if err == io.EOF {
				break
			}
			return err
		}

		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(req)
		}()
	}
	return nil
}
`,
	// The request loop's state, for Server.Blocking (clamfuse_readloop.go).
	"read loop field": "",
	// A serveNode's wait group in 8 bytes (clamfuse_waitgroup.go).
	"serve node wait group": "\twg sync.WaitGroup\n",
	// No debug message made per request when nobody reads them
	// (fuse.IsNopDebug): two allocations less per request.
	"quiet field": "",
	"quiet set":   "",
	"request log": `	switch r.(type) {
	case *fuse.NotifyReply:
		// don't log NotifyReply here, they're logged by the recipient
		// as soon as we have decoded them to the right types
	default:
		c.debug(request{
			In: r,
		})
	}
`,
	"response log": `		msg := response{
			Op:      opName(r),
			Request: logResponseHeader{ID: hdr.ID},
		}
		if err, ok := resp.(error); ok {
			errno := fuse.ToErrno(err)
			msg.Errno = errno.ErrnoName()
			if errno != err && syscall.Errno(errno) != err {
				// if it's more than just a fuse.Errno or a
				// syscall.Errno, log extra detail
				msg.Error = err.Error()
			}
		} else {
			msg.Out = resp
		}
		c.debug(msg)
`,
}

// TestSameAsUpstream checks that serve.go is bazil.org/fuse/fs/serve.go of
// the version go.mod pins, changed only in its marked blocks.
func TestSameAsUpstream(t *testing.T) {
	dir := upstream.ModuleDir(t, "bazil.org/fuse")
	upstream.Check(t, filepath.Join(dir, "fs", "serve.go"), "serve.go", replaced)
}
