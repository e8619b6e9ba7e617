package fusefs

// clamfuse: notifications upstream lacks.

import "github.com/clamfuse/clamfuse/fs/internal/fuse"

// ExpireEntry marks the kernel's cached directory entry name in parent as
// expired (see fuse.Conn.ExpireEntry): the next use of the name looks it
// up again, but the entry is not dropped at once. It fails with ENOSYS
// unless the mount asked for fuse.InitHasExpireOnly and the kernel offered
// it.
//
// Returns fuse.ErrNotCached if the kernel is not currently caching the
// entry.
func (s *Server) ExpireEntry(parent Node, name string) error {
	return s.notifyNode(parent, func(id fuse.NodeID) (any, error) {
		return invalidateEntryDetail{Name: name}, s.conn.ExpireEntry(id, name)
	}, "ExpireEntry")
}

// NotifyStoreBuffer puts b's data into the kernel's page cache of node at
// offset (see fuse.Conn.NotifyStoreBuffer): NotifyStore without a copy
// of the data.
//
// Returns fuse.ErrNotCached if the kernel is not currently caching the
// node.
func (s *Server) NotifyStoreBuffer(node Node, offset uint64, b *fuse.StoreBuffer) error {
	return s.notifyNode(node, func(id fuse.NodeID) (any, error) {
		return notifyStoreRetrieveDetail{Off: offset, Size: uint64(len(b.Data()))}, s.conn.NotifyStoreBuffer(id, offset, b)
	}, "NotifyStore")
}

// notifyNode sends the notification send makes about node, keeping the
// node's id from being reused meanwhile, and logs it as op with the
// detail send returns, as upstream's notifications do (serve.go);
// fuse.ErrNotCached if the kernel does not know node.
func (s *Server) notifyNode(node Node, send func(fuse.NodeID) (any, error), op string) error {
	s.meta.Lock()
	id, ok := s.nodeID(node)
	if ok {
		snode := s.node[id]
		snode.wg.Add(1)
		defer snode.wg.Done()
	}
	s.meta.Unlock()
	if !ok {
		return fuse.ErrNotCached
	}
	out, err := send(id)
	s.debug(notification{Op: op, Node: id, Out: out, Err: errstr(err)})
	return err
}
