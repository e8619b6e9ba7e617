package fs

import (
	"math/rand/v2"
	"testing"
)

// TestNodeTable checks the table of nodes against a map through random
// sets and deletes, growing and shrinking, with colliding identities.
func TestNodeTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys int // distinct identities used
		ops  int
	}{
		{"small", 10, 2000},
		{"grows and shrinks", 5000, 60000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			tab := newNodeTable()
			want := map[inoKey]*Node{}
			for range tc.ops {
				k := inoKey{dev: 1, ino: uint64(rng.IntN(tc.keys))}
				switch rng.IntN(3) {
				case 0, 1:
					n := &Node{id: k}
					tab.set(n)
					want[k] = n
				case 2:
					if n := want[k]; n != nil {
						if rng.IntN(4) == 0 {
							tab.delete(&Node{id: k}) // another node of the same identity: not removed
							continue
						}
						tab.delete(n)
						delete(want, k)
					}
				}
			}
			if tab.len() != len(want) {
				t.Fatalf("len %d, want %d", tab.len(), len(want))
			}
			for k, n := range want {
				if got := tab.get(k); got != n {
					t.Fatalf("get(%v) = %p, want %p", k, got, n)
				}
			}
			seen := 0
			for n := range tab.all() {
				if want[n.id] != n {
					t.Fatalf("all yields %v, not in the table", n.id)
				}
				seen++
			}
			if seen != len(want) {
				t.Fatalf("all yields %d nodes, want %d", seen, len(want))
			}
			if tab.get(inoKey{dev: 2, ino: 1}) != nil {
				t.Fatal("get of an identity never set found a node")
			}
			// Deleting everything shrinks the table back.
			for _, n := range want {
				tab.delete(n)
			}
			if tab.len() != 0 || len(tab.slots) > minNodeSlots {
				t.Errorf("emptied: %d nodes in %d slots", tab.len(), len(tab.slots))
			}
		})
	}
}
