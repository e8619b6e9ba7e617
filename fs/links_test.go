package fs

import (
	"slices"
	"testing"
)

// TestLinkSet checks a node's names: the first held in the node, the
// others (hard links) in the FS's moreLinks, which holds nothing for a
// node once it has one name or none, or is forgotten.
func TestLinkSet(t *testing.T) {
	fsys, _ := testTree(t, 0, 16)
	d1 := &Node{fsys: fsys, id: inoKey{1, 1}}
	d2 := &Node{fsys: fsys, id: inoKey{1, 2}}
	a, b, c := link{d1, "a"}, link{d1, "b"}, link{d2, "c"}
	names := func(n *Node) []link {
		fsys.treeMu.Lock()
		defer fsys.treeMu.Unlock()
		if got := n.links.len(); got != len(n.links.slice()) {
			t.Fatalf("len %d, but %d names", got, len(n.links.slice()))
		}
		return n.links.slice()
	}
	for _, tc := range []struct {
		name string
		op   func(n *Node)
		want []link
		more bool // an entry in moreLinks
	}{
		{"none", func(n *Node) {}, nil, false},
		{"one", func(n *Node) { n.addLink(d1, "a") }, []link{a}, false},
		{"one twice", func(n *Node) { n.addLink(d1, "a"); n.addLink(d1, "a") }, []link{a}, false},
		{"three", func(n *Node) { n.addLink(d1, "a"); n.addLink(d1, "b"); n.addLink(d2, "c") }, []link{a, b, c}, true},
		{"first removed", func(n *Node) {
			n.addLink(d1, "a")
			n.addLink(d1, "b")
			n.addLink(d2, "c")
			n.dropLink(d1, "a")
		}, []link{c, b}, true},
		{"middle removed", func(n *Node) {
			n.addLink(d1, "a")
			n.addLink(d1, "b")
			n.addLink(d2, "c")
			n.dropLink(d1, "b")
		}, []link{a, c}, true},
		{"back to one", func(n *Node) { n.addLink(d1, "a"); n.addLink(d1, "b"); n.dropLink(d1, "a") }, []link{b}, false},
		{"all removed", func(n *Node) { n.addLink(d1, "a"); n.addLink(d1, "b"); n.dropLink(d1, "b"); n.dropLink(d1, "a") }, nil, false},
		{"unknown removed", func(n *Node) { n.addLink(d1, "a"); n.dropLink(d2, "a") }, []link{a}, false},
		{"reset", func(n *Node) {
			n.addLink(d1, "a")
			n.addLink(d1, "b")
			fsys.treeMu.Lock()
			n.links.reset()
			fsys.treeMu.Unlock()
		}, nil, false},
		{"forgotten", func(n *Node) { n.addLink(d1, "a"); n.addLink(d1, "b"); fsys.forget(n) }, []link{a}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{fsys: fsys, id: inoKey{1, 100}}
			tc.op(n)
			if got := names(n); !slices.Equal(got, tc.want) {
				t.Errorf("names %v, want %v", got, tc.want)
			}
			fsys.treeMu.Lock()
			_, more := fsys.moreLinks[&n.links]
			fsys.treeMu.Unlock()
			if more != tc.more {
				t.Errorf("entry in moreLinks: %v, want %v", more, tc.more)
			}
			fsys.forget(n)
		})
	}
}
