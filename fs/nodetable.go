package fs

import (
	"hash/maphash"
	"iter"
)

// nodeTable is the live nodes by backing identity (FS.nodes), guarded by
// FS.treeMu. It is an open addressing table (linear probing) of node
// pointers whose key is the node's own id, so a node costs one pointer
// slot, 11 to 21 bytes at the load the table keeps (3/8 to 3/4), where a
// Go map entry, which stores the key again, cost 35 bytes (issue #12,
// TestNodeTableMemory). It shrinks as nodes are forgotten.
type nodeTable struct {
	seed  maphash.Seed
	slots []*Node // nil if empty
	count int
}

// minNodeSlots is the smallest table, and the size below which it does
// not shrink.
const minNodeSlots = 64

func newNodeTable() nodeTable { return nodeTable{seed: maphash.MakeSeed()} }

func (t *nodeTable) len() int { return t.count }

func (t *nodeTable) home(k inoKey) int {
	return int(maphash.Comparable(t.seed, k) & uint64(len(t.slots)-1))
}

// get returns the node of k, or nil.
func (t *nodeTable) get(k inoKey) *Node {
	if len(t.slots) == 0 {
		return nil
	}
	mask := len(t.slots) - 1
	for s := t.home(k); ; s = (s + 1) & mask {
		if n := t.slots[s]; n == nil || n.id == k {
			return n
		}
	}
}

// set makes n the node of n.id, in place of any other.
func (t *nodeTable) set(n *Node) {
	if (t.count+1)*4 > len(t.slots)*3 {
		t.resize(max(2*len(t.slots), minNodeSlots))
	}
	mask := len(t.slots) - 1
	for s := t.home(n.id); ; s = (s + 1) & mask {
		switch v := t.slots[s]; {
		case v == nil:
			t.slots[s] = n
			t.count++
			return
		case v.id == n.id:
			t.slots[s] = n
			return
		}
	}
}

// delete removes n, if it is the node of n.id.
func (t *nodeTable) delete(n *Node) {
	if len(t.slots) == 0 {
		return
	}
	mask := len(t.slots) - 1
	s := t.home(n.id)
	for t.slots[s] != n {
		if t.slots[s] == nil {
			return
		}
		s = (s + 1) & mask
	}
	// Empty slot s, moving back the nodes after it that probing would no
	// longer reach (no tombstones; as LRU.unslot in cache/lru.go).
	hole := s
	for u := (s + 1) & mask; t.slots[u] != nil; u = (u + 1) & mask {
		h := t.home(t.slots[u].id)
		// The node at u stays if its home is cyclically in (hole, u].
		if hole <= u && hole < h && h <= u || hole > u && (hole < h || h <= u) {
			continue
		}
		t.slots[hole] = t.slots[u]
		hole = u
	}
	t.slots[hole] = nil
	t.count--
	if len(t.slots) > minNodeSlots && t.count*8 < len(t.slots) {
		t.resize(len(t.slots) / 2)
	}
}

// resize moves the nodes to a table of n slots, a power of two.
func (t *nodeTable) resize(n int) {
	old := t.slots
	t.slots = make([]*Node, n)
	mask := n - 1
	for _, v := range old {
		if v == nil {
			continue
		}
		s := t.home(v.id)
		for t.slots[s] != nil {
			s = (s + 1) & mask
		}
		t.slots[s] = v
	}
}

// all yields every node.
func (t *nodeTable) all() iter.Seq[*Node] {
	return func(yield func(*Node) bool) {
		for _, n := range t.slots {
			if n != nil && !yield(n) {
				return
			}
		}
	}
}
