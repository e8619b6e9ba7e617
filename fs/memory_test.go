package fs

import (
	"fmt"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// liveHeap is the live heap after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestNodeTableMemory guards the memory clamfuse keeps for every inode the
// kernel caches (issue #12: 100 000 files opened once in at most 48 MiB):
// the Node, its link to its name, and its entry in the table of nodes by
// backing identity, as Lookup makes them. The names are the requests', and
// not counted. Measured: 101 bytes per file node (the Node, 80, which
// holds its one name and no state of open files; the table's share, 21,
// at its lowest load here), where it was 149 with a Node of 128 and 187
// before that (a Go map's entry, 35, and a slice of names, 24), with the
// FUSE server's own share guarded by fusefs.TestServeNodeMemory.
func TestNodeTableMemory(t *testing.T) {
	const (
		nodes    = 100_000
		maxBytes = 112 // per node, a margin over what was measured
	)
	fsys, _ := testTree(t, 0, 16)
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("f%06d", i)
	}
	dev := fsys.rootN.id.dev
	before := liveHeap()
	for i, name := range names {
		st := unix.Stat_t{Dev: dev, Ino: uint64(1_000_000 + i), Mode: unix.S_IFREG | 0o644}
		fsys.linkNode(&st, 0, fsys.rootN, name)
	}
	after := liveHeap()
	fsys.treeMu.Lock()
	n := fsys.nodes.len()
	fsys.treeMu.Unlock()
	if n != nodes {
		t.Fatalf("%d nodes in the table, want %d", n, nodes)
	}
	runtime.KeepAlive(fsys)
	runtime.KeepAlive(names)
	per := float64(int64(after)-int64(before)) / nodes
	t.Logf("%d nodes: %.1f bytes of live heap per node (%.1f MiB)", nodes, per, float64(int64(after)-int64(before))/(1<<20))
	if per > maxBytes {
		t.Errorf("%.1f bytes of live heap per node; want at most %d", per, maxBytes)
	}
}
