package fusefs

// clamfuse: serving READDIRPLUS (fuse.ReadDirPlusRequest; block
// "requests" of handleRequest).

import (
	"context"
	"encoding/binary"
	"syscall"
	"time"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// HandleReadDirPluser is a directory handle that lists itself in pieces,
// at offsets of its own, with the nodes of its entries: for READDIRPLUS
// (the kernel sends it only when the mount asked for
// fuse.InitDoReaddirplus), and for READDIR too, which with
// fuse.InitReaddirplusAuto the kernel mixes with READDIRPLUS in one
// listing, so the offsets of both must agree. (A directory handle that is
// a HandleReadDirAller instead gets READDIRPLUS answered from ReadDirAll:
// its entries listed without lookups, at READDIR's offsets.)
type HandleReadDirPluser interface {
	// ReadDirPlus returns the entries from req.Offset on. The server
	// sends as many as fit in req.Size; the kernel asks again from the
	// Offset of the last one it took.
	ReadDirPlus(ctx context.Context, req DirRead) ([]DirentPlus, error)
}

// A DirRead asks a HandleReadDirPluser for entries.
type DirRead struct {
	Offset int64 // from the entry at this offset on; 0: the start
	Size   int   // bytes of the reply
	// Plus is set for a READDIRPLUS. For a READDIR only the entries'
	// Dirent and Offset are sent: Node, EntryValid and Attr may be left
	// out.
	Plus bool
	// Dir is the directory's node, and Header the request's (who asks).
	Dir    Node
	Header *fuse.Header
}

// A DirentPlus is an entry a HandleReadDirPluser lists.
type DirentPlus struct {
	// Inode 0 is replaced by a dynamic one (FSInodeGenerator), as for
	// ReadDirAll.
	fuse.Dirent
	// Offset is where the entry after this one is.
	Offset uint64
	// Node is the entry's node, as Lookup of the name would return it,
	// or nil to list the entry only (the kernel then looks it up when
	// needed). A Node sent gets what a Node returned by Lookup gets: a
	// NodeID, and one more reference, to be dropped by the kernel's
	// FORGET (NodeForgetter) - but for the entries "." and "..", which
	// the kernel does not count, and which are listed only.
	Node Node
	// EntryValid is how long the kernel may cache the name.
	EntryValid time.Duration
	// Attr are the attributes of Node, if the handle has them (from the
	// stat that found the entry); nil: from Node.Attr, as for Lookup.
	Attr *fuse.Attr
}

func (c *Server) readDirPlus(ctx context.Context, snode *serveNode, r *fuse.ReadDirPlusRequest, done func(resp interface{})) error {
	shandle := c.getHandle(r.Handle)
	if shandle == nil {
		return syscall.ESTALE
	}
	var data []byte
	switch h := shandle.handle.(type) {
	case HandleReadDirPluser:
		ents, err := h.ReadDirPlus(ctx, DirRead{Offset: r.Offset, Size: r.Size, Plus: true, Dir: snode.node, Header: &r.Header})
		if err != nil {
			return err
		}
		data = c.appendDirentsPlus(ctx, snode, r, ents)
	case HandleReadDirAller:
		var err error
		if data, err = c.readDirAllPlus(ctx, snode, shandle, h, r); err != nil {
			return err
		}
	default:
		return syscall.ENOSYS
	}
	s := &fuse.ReadDirPlusResponse{Data: data}
	done(s)
	r.Respond(s)
	return nil
}

// appendDirentsPlus encodes the entries of ents that fit in the reply to
// r, and counts the lookups of those sent (only those).
func (c *Server) appendDirentsPlus(ctx context.Context, snode *serveNode, r *fuse.ReadDirPlusRequest, ents []DirentPlus) []byte {
	proto := c.conn.Protocol()
	var data []byte
	for _, e := range ents {
		if len(data)+fuse.DirentPlusSize(e.Name) > r.Size {
			break
		}
		de := fuse.DirentPlus{Dirent: e.Dirent, Offset: e.Offset}
		if de.Inode == 0 {
			de.Inode = c.dynamicInode(snode.inode, e.Name)
		}
		if e.Node != nil && e.Name != "." && e.Name != ".." {
			var a fuse.Attr
			if e.Attr != nil {
				a = *e.Attr
			} else if err := nodeAttr(ctx, e.Node, &a); err != nil {
				// Gone already, say: listed without a lookup.
				data = fuse.AppendDirentPlus(data, proto, de)
				continue
			}
			if a.Inode == 0 {
				a.Inode = de.Inode
			}
			de.Entry.Attr = a
			de.Entry.EntryValid = e.EntryValid
			de.Entry.Node, de.Entry.Generation = c.saveNode(a.Inode, e.Node)
		}
		data = fuse.AppendDirentPlus(data, proto, de)
	}
	return data
}

// readDirAllPlus answers r from ReadDirAll: the listing READDIR would
// send (cached in shandle.readData as READDIR caches it, and read again at
// offset 0), its entries from r.Offset on as direntplus entries without
// lookups, at READDIR's offsets.
func (c *Server) readDirAllPlus(ctx context.Context, snode *serveNode, shandle *serveHandle, h HandleReadDirAller, r *fuse.ReadDirPlusRequest) ([]byte, error) {
	if r.Offset == 0 {
		shandle.readData = nil
	}
	if shandle.readData == nil {
		dirs, err := h.ReadDirAll(ctx)
		if err != nil {
			return nil, err
		}
		var data []byte
		for _, dir := range dirs {
			if dir.Inode == 0 {
				dir.Inode = c.dynamicInode(snode.inode, dir.Name)
			}
			data = fuse.AppendDirent(data, dir)
		}
		shandle.readData = data
	}
	proto := c.conn.Protocol()
	var out []byte
	plain := shandle.readData
	for pos := r.Offset; pos >= 0 && pos < int64(len(plain)); {
		// struct fuse_dirent: ino, off, namelen, type, name.
		rec := plain[pos:]
		if len(rec) < 24 {
			return nil, syscall.EIO
		}
		e := fuse.DirentPlus{
			Dirent: fuse.Dirent{
				Inode: binary.NativeEndian.Uint64(rec[0:]),
				Type:  fuse.DirentType(binary.NativeEndian.Uint32(rec[20:])),
			},
			Offset: binary.NativeEndian.Uint64(rec[8:]),
		}
		n := int(binary.NativeEndian.Uint32(rec[16:]))
		if 24+n > len(rec) || e.Offset <= uint64(pos) {
			return nil, syscall.EIO
		}
		e.Name = string(rec[24 : 24+n])
		if len(out)+fuse.DirentPlusSize(e.Name) > r.Size {
			break
		}
		out = fuse.AppendDirentPlus(out, proto, e)
		pos = int64(e.Offset)
	}
	return out, nil
}

// readDirPlain answers the READDIR r from h, at h's offsets.
func (c *Server) readDirPlain(ctx context.Context, snode *serveNode, r *fuse.ReadRequest, h HandleReadDirPluser, done func(resp interface{})) error {
	ents, err := h.ReadDirPlus(ctx, DirRead{Offset: r.Offset, Size: r.Size, Dir: snode.node, Header: &r.Header})
	if err != nil {
		return err
	}
	var data []byte
	for _, e := range ents {
		if len(data)+fuse.DirentSize(e.Name) > r.Size {
			break
		}
		if e.Inode == 0 {
			e.Inode = c.dynamicInode(snode.inode, e.Name)
		}
		data = fuse.AppendDirentAt(data, e.Dirent, e.Offset)
	}
	s := &fuse.ReadResponse{Data: data}
	done(s)
	r.Respond(s)
	return nil
}
