package fs

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// testTree makes n directories d00/sub, d01/sub, ... under a new backing
// root and returns a filesystem on it with room for cacheSize directory
// descriptors, and the nodes of the sub directories as lookups make them.
func testTree(t *testing.T, n, cacheSize int) (*FS, []*Node) {
	t.Helper()
	root := t.TempDir()
	for i := range n {
		mustNoErr(t, os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%02d", i), "sub"), 0o755))
	}
	rootFD, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	mustNoErr(t, err)
	t.Cleanup(func() { unix.Close(rootFD) })
	l := DeriveLimits(4096, 0)
	l.DirFDs = cacheSize
	fsys, err := New(rootFD, Options{Limits: l})
	mustNoErr(t, err)
	var nodes []*Node
	for i := range n {
		parent := lookupNode(t, fsys, fsys.rootN, fmt.Sprintf("d%02d", i))
		nodes = append(nodes, lookupNode(t, fsys, parent, "sub"))
	}
	return fsys, nodes
}

// lookupNode is what Lookup does, without a request.
func lookupNode(t *testing.T, fsys *FS, parent *Node, name string) *Node {
	t.Helper()
	fd, release, err := parent.pathFD()
	mustNoErr(t, err)
	defer release()
	var st unix.Stat_t
	mustNoErr(t, unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW))
	return fsys.node(fd, &st, parent, name)
}

// checkFD fails t unless fd is the directory n.
func checkFD(t *testing.T, n *Node, fd int) {
	t.Helper()
	var st unix.Stat_t
	mustNoErr(t, unix.Fstat(fd, &st))
	if (inoKey{st.Dev, st.Ino}) != n.id {
		t.Fatalf("pathFD of %s is inode %d, want %d", n.RelPath(), st.Ino, n.id.ino)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	mustNoErr(t, err)
	return len(ents)
}

// TestDirCacheBounded: however many directories are used, at most the
// cache size keep a descriptor, each node still reaches its own
// directory, and forgetting nodes frees their slots.
func TestDirCacheBounded(t *testing.T) {
	const dirs, size = 60, 8
	before := openFDs(t)
	fsys, nodes := testTree(t, dirs, size)
	for round := range 3 {
		for _, n := range nodes {
			fd, release, err := n.pathFD()
			mustNoErr(t, err)
			checkFD(t, n, fd)
			release()
		}
		if c := fsys.dirs.cached(); c > size {
			t.Fatalf("round %d: %d descriptors cached, over %d", round, c, size)
		}
		if got := openFDs(t) - before; got > size+1 { // +1: the root
			t.Fatalf("round %d: %d descriptors open, over %d cached + the root", round, got, size)
		}
	}
	for _, n := range nodes {
		n.Forget()
	}
	if c := fsys.dirs.cached(); c != 0 {
		t.Errorf("%d descriptors cached after every node was forgotten", c)
	}
}

// TestDirCacheInUse: a descriptor in use is never closed; when every
// cached one is in use, a new one is used once and closed.
func TestDirCacheInUse(t *testing.T) {
	fsys, nodes := testTree(t, 3, 2)
	fd0, release0, err := nodes[0].pathFD()
	mustNoErr(t, err)
	fd1, release1, err := nodes[1].pathFD()
	mustNoErr(t, err)
	before := openFDs(t)
	fd2, release2, err := nodes[2].pathFD()
	mustNoErr(t, err)
	checkFD(t, nodes[2], fd2)
	release2()
	if got := openFDs(t); got != before {
		t.Errorf("%d descriptors open after using an uncached one, %d before", got, before)
	}
	checkFD(t, nodes[0], fd0) // still open, still theirs
	checkFD(t, nodes[1], fd1)
	release0()
	release1()
	if c := fsys.dirs.cached(); c != 2 {
		t.Errorf("%d descriptors cached, want 2", c)
	}
}

// TestDirCacheConcurrent: lookups, evictions and forgets from many
// goroutines (run with -race), with operations that hold one node's
// descriptor while they need another's, as Rename and Link do. As in the
// kernel, no node is forgotten while an operation uses it (the request
// holds the inode): forgets wait for the operations in flight (inUse).
// Without that rule two forgets of two directories that two operations
// each hold one of and need the other could wait for each other (a
// pending writer of an RWMutex blocks new readers); it hung 1 run in
// about 250.
func TestDirCacheConcurrent(t *testing.T) {
	const dirs, size = 40, 6
	before := openFDs(t)
	fsys, nodes := testTree(t, dirs, size)
	var mu sync.Mutex      // guards nodes: a forgotten node is looked up anew
	var inUse sync.RWMutex // read-held by operations, write-held by a forget
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 3000 {
				i, j := rng.IntN(dirs), rng.IntN(dirs)
				mu.Lock()
				a, b := nodes[i], nodes[j]
				mu.Unlock()
				switch rng.IntN(10) {
				case 0:
					inUse.Lock()
					a.Forget()
					inUse.Unlock()
					parent := lookupNode(t, fsys, fsys.rootN, fmt.Sprintf("d%02d", i))
					mu.Lock()
					nodes[i] = lookupNode(t, fsys, parent, "sub")
					mu.Unlock()
				default:
					inUse.RLock()
					fa, ra, err := a.pathFD()
					if err != nil {
						inUse.RUnlock()
						continue // forgotten before: it works by path, or not at all
					}
					if a != b {
						fb, rb, err := b.pathFD()
						if err == nil {
							checkFD(t, b, fb)
							rb()
						}
					}
					checkFD(t, a, fa)
					ra()
					inUse.RUnlock()
				}
			}
		}()
	}
	wg.Wait()
	if c := fsys.dirs.cached(); c > size {
		t.Errorf("%d descriptors cached, over %d", c, size)
	}
	// Forget releases slots; the parents' descriptors count too.
	if got := openFDs(t) - before; got > size+1 {
		t.Errorf("%d descriptors open, over %d cached + the root", got, size)
	}
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
