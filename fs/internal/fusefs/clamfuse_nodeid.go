package fusefs

// clamfuse: a node that keeps its own NodeID (blocks "root id", "save
// node id", "drop node id" and the "... id" blocks of the notifications
// in serve.go).
//
// Upstream finds the NodeID of a Node in a map keyed by the Node, one
// entry per inode the kernel holds: with 100 000 inodes cached that map
// alone is some 4 MB, beside the Node itself and its serveNode. A Node
// that implements NodeIDKeeper holds its NodeID in a field of its own
// instead, and has no map entry. Other Nodes use the map as upstream does.

import (
	"math"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// NodeIDKeeper is a Node that stores the NodeID the Server gave it. The
// Server calls both methods with its lock held, and is their only caller:
// the field needs no lock of its own. A Node is served by at most one
// Server.
type NodeIDKeeper interface {
	Node
	// ServeID returns what SetServeID last stored, 0 for none.
	ServeID() uint32
	SetServeID(id uint32)
}

// nodeID returns the NodeID of node, if the kernel holds it; s.meta is
// held.
func (s *Server) nodeID(node Node) (fuse.NodeID, bool) {
	if k, ok := node.(NodeIDKeeper); ok {
		if id := fuse.NodeID(k.ServeID()); id != 0 && id < fuse.NodeID(len(s.node)) && s.node[id] != nil && s.node[id].node == node {
			return id, true
		}
	}
	if len(s.nodeRef) == 0 {
		return 0, false
	}
	id, ok := s.nodeRef[node]
	return id, ok
}

// setNodeID records that node is id; s.meta is held.
func (s *Server) setNodeID(node Node, id fuse.NodeID) {
	if k, ok := node.(NodeIDKeeper); ok && id <= math.MaxUint32 {
		k.SetServeID(uint32(id))
		return
	}
	s.nodeRef[node] = id
}

// deleteNodeID forgets that node is id; s.meta is held.
func (s *Server) deleteNodeID(node Node, id fuse.NodeID) {
	if k, ok := node.(NodeIDKeeper); ok && fuse.NodeID(k.ServeID()) == id {
		k.SetServeID(0)
	}
	if len(s.nodeRef) > 0 {
		delete(s.nodeRef, node)
	}
}
