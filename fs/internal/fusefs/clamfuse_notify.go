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
	s.meta.Lock()
	id, ok := s.nodeID(parent)
	if ok {
		snode := s.node[id]
		snode.wg.Add(1)
		defer snode.wg.Done()
	}
	s.meta.Unlock()
	if !ok {
		return fuse.ErrNotCached
	}
	err := s.conn.ExpireEntry(id, name)
	s.debug(notification{
		Op:   "ExpireEntry",
		Node: id,
		Out:  invalidateEntryDetail{Name: name},
		Err:  errstr(err),
	})
	return err
}

// NotifyStoreBuffer puts b's data into the kernel's page cache of node at
// offset (see fuse.Conn.NotifyStoreBuffer): NotifyStore without a copy
// of the data.
//
// Returns fuse.ErrNotCached if the kernel is not currently caching the
// node.
func (s *Server) NotifyStoreBuffer(node Node, offset uint64, b *fuse.StoreBuffer) error {
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
	err := s.conn.NotifyStoreBuffer(id, offset, b)
	s.debug(notification{
		Op:   "NotifyStore",
		Node: id,
		Out:  notifyStoreRetrieveDetail{Off: offset, Size: uint64(len(b.Data()))},
		Err:  errstr(err),
	})
	return err
}
