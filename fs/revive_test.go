package fs

import (
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNodeRevived: a LOOKUP that races the kernel's FORGET of a node may
// hand the node out again (the server drops its NodeID, then saves it
// anew). Whichever of Forget and the new NodeID comes first, the node
// stays the one its inode's lookups find: a second node would be a
// second inode in the kernel (a FIFO's parked readers and the writers
// coming by name would never meet: TestHostileSwapToFIFO with
// CLAMFUSE_FIFO_PARK=1), and it keeps all its names, the kernel may
// have it under any of them. A node forgotten for good leaves the table.
func TestNodeRevived(t *testing.T) {
	tests := []struct {
		name  string
		steps func(n *Node)
		kept  bool
	}{
		{"forgotten", func(n *Node) { n.SetServeID(0); n.Forget() }, false},
		{"handed out again before Forget", func(n *Node) { n.SetServeID(0); n.SetServeID(7); n.Forget() }, true},
		{"handed out again after Forget", func(n *Node) { n.SetServeID(0); n.Forget(); n.SetServeID(7) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &FS{log: slog.New(slog.DiscardHandler), nodes: newNodeTable()}
			f.rootN = &Node{fsys: f, id: inoKey{1, 1}, typ: unix.S_IFDIR}
			st := unix.Stat_t{Dev: 1, Ino: 42, Mode: unix.S_IFIFO | 0o644, Nlink: 1}
			n := f.linkNode(&st, 0, f.rootN, "f")
			f.linkNode(&st, 0, f.rootN, "g") // a second name
			n.SetServeID(5)
			tt.steps(n)
			if tt.kept {
				// Handed out again, it keeps its names: the kernel may
				// have it under any of them (the watcher reaches the
				// kernel's entries by them).
				if got := n.linksSnapshot(); len(got) != 2 {
					t.Errorf("names of the node handed out again: %v, want f and g", got)
				}
			}
			again := f.linkNode(&st, 0, f.rootN, "f")
			if kept := again == n; kept != tt.kept {
				t.Errorf("the next lookup found the same node: %v, want %v", kept, tt.kept)
			}
		})
	}
}
