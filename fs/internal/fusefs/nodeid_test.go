package fusefs

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// keptFile is a memFile that keeps its own NodeID (NodeIDKeeper).
type keptFile struct {
	*memFile
	id uint32 // guarded by the Server's meta lock
}

var _ NodeIDKeeper = (*keptFile)(nil)

func (f *keptFile) ServeID() uint32      { return f.id }
func (f *keptFile) SetServeID(id uint32) { f.id = id }

// TestNodeIDKeeper checks on a real mount that a NodeIDKeeper holds its
// NodeID instead of an entry in the Server's map (the memory of every
// inode the kernel caches), that notifications find it by that ID, and
// that the kernel's FORGET clears it, so a notification then reports it
// not cached.
func TestNodeIDKeeper(t *testing.T) {
	fsys := newMemFS()
	k := &keptFile{memFile: &memFile{fs: fsys, inode: fsys.nextInode(), data: []byte("kept\n")}}
	fsys.root.mu.Lock()
	fsys.root.entries["k"] = k
	fsys.root.mu.Unlock()
	plain := fsys.root.file("p", []byte("plain\n"))
	m := mount(t, fsys)
	var id uint32
	var held, kInMap, pInMap bool
	// Another process's drop_caches (make bench beside make test) can make
	// the kernel forget both between the reads and the checks: then read
	// them again.
	for try := 0; ; try++ {
		before := k.forgets.Load()
		for _, name := range []string{"k", "p"} {
			if got := m.run(t, "cat", filepath.Join(m.dir, name)); got == "" {
				t.Fatalf("cat %s: nothing read", name)
			}
		}
		m.srv.meta.Lock()
		id = k.id
		_, kInMap = m.srv.nodeRef[k]
		_, pInMap = m.srv.nodeRef[plain]
		held = id != 0 && int(id) < len(m.srv.node) && m.srv.node[id] != nil && m.srv.node[id].node == Node(k)
		m.srv.meta.Unlock()
		if held || k.forgets.Load() == before || try == 5 {
			break
		}
		t.Logf("the kernel forgot the keeper meanwhile (drop_caches elsewhere?); reading again")
	}
	if !held || kInMap {
		t.Fatalf("the keeper: NodeID %d held by its serveNode: %v, in the map: %v; want held, not in the map", id, held, kInMap)
	}
	if !pInMap {
		t.Fatalf("a node that keeps no NodeID is not in the map")
	}
	if err := m.srv.InvalidateNodeAttr(k); err != nil {
		t.Fatalf("InvalidateNodeAttr of the keeper: %v", err)
	}

	// The kernel forgets the name, then the inode.
	forgot := k.forgets.Load()
	if err := m.srv.InvalidateEntry(fsys.root, "k"); err != nil && err != fuse.ErrNotCached {
		t.Fatalf("InvalidateEntry: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for k.forgets.Load() == forgot {
		if time.Now().After(deadline) {
			t.Fatalf("the kernel did not forget the keeper after its entry was invalidated")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
	m.srv.meta.Lock()
	id = k.id
	m.srv.meta.Unlock()
	if id != 0 {
		t.Errorf("after FORGET the keeper still holds NodeID %d", id)
	}
	if err := m.srv.InvalidateNodeAttr(k); err != fuse.ErrNotCached {
		t.Errorf("InvalidateNodeAttr of a forgotten keeper: %v, want ErrNotCached", err)
	}

	// Looked up again, it gets a NodeID again.
	m.run(t, "cat", filepath.Join(m.dir, "k"))
	if err := m.srv.InvalidateNodeAttr(k); err != nil {
		t.Errorf("InvalidateNodeAttr of the keeper looked up again: %v", err)
	}
}

// TestServeNodeMemory guards the FUSE server's share of the memory of
// every inode the kernel caches (issue #12): its serveNode and slot in the
// table of NodeIDs, and no map entry for a NodeIDKeeper (upstream's map
// took some 40 bytes more per node). Measured: 58 bytes per node (the
// serveNode, 48, and its slot), 74 while serveNode held a sync.WaitGroup.
func TestServeNodeMemory(t *testing.T) {
	const (
		nodes    = 100_000
		maxBytes = 66 // per node, a margin over what was measured
	)
	s := New(nil, nil)
	s.node = append(s.node, nil, &serveNode{inode: 1, refs: 1})
	kept := make([]keptFile, nodes)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := range kept {
		s.saveNode(uint64(i+2), &kept[i])
	}
	after := heap()
	if len(s.nodeRef) != 0 {
		t.Errorf("%d NodeIDKeepers in the map, want none", len(s.nodeRef))
	}
	for _, i := range []int{0, nodes / 2, nodes - 1} {
		if id, ok := s.nodeID(&kept[i]); !ok || s.node[id].node != Node(&kept[i]) {
			t.Fatalf("node %d: NodeID %d, %v", i, id, ok)
		}
	}
	runtime.KeepAlive(s)
	runtime.KeepAlive(kept)
	per := float64(int64(after)-int64(before)) / nodes
	t.Logf("%d nodes: %.1f bytes of live heap per node (%.1f MiB)", nodes, per, float64(int64(after)-int64(before))/(1<<20))
	if per > maxBytes {
		t.Errorf("%.1f bytes of live heap per node; want at most %d", per, maxBytes)
	}
}
