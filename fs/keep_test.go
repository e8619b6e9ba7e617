package fs

import (
	"testing"
	"unsafe"

	"github.com/clamfuse/clamfuse/cache"
)

func TestStateDigest(t *testing.T) {
	base := cache.Key{Dev: 1, Ino: 2, Size: 3, MtimeNs: 4, CtimeNs: 5, DB: "ClamAV 1.4.6/27000", Gen: 6, Writes: 7}
	const sum = 8
	if stateDigest(base, sum) != stateDigest(base, sum) {
		t.Fatal("the same state has two digests")
	}
	if stateDigest(base, sum) == stateDigest(base, sum+1) || stateDigest(base, sum) == stateDigest(base, 0) {
		t.Error("states differing in their contents have the same digest")
	}
	for _, tc := range []struct {
		name   string
		change func(*cache.Key)
	}{
		{"dev", func(k *cache.Key) { k.Dev++ }},
		{"ino", func(k *cache.Key) { k.Ino++ }},
		{"size", func(k *cache.Key) { k.Size++ }},
		{"mtime", func(k *cache.Key) { k.MtimeNs++ }},
		{"ctime", func(k *cache.Key) { k.CtimeNs++ }},
		{"database", func(k *cache.Key) { k.DB += "1" }},
		{"generation", func(k *cache.Key) { k.Gen++ }},
		{"writes", func(k *cache.Key) { k.Writes++ }},
		{"zero key", func(k *cache.Key) { *k = cache.Key{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := base
			tc.change(&k)
			d := stateDigest(k, sum)
			if d == stateDigest(base, sum) {
				t.Errorf("a state differing in %s has the same digest", tc.name)
			}
			if d == 0 {
				t.Error("digest 0 means no state")
			}
		})
	}
}

// TestNodeSize guards the memory of every inode the kernel holds: a Node
// fits the 80-byte allocation class (it was 128 while it held the state of
// open files and directory descriptors, now in nodeState, issue #12), and
// the state of an open file the 64-byte one.
func TestNodeSize(t *testing.T) {
	if n := unsafe.Sizeof(Node{}); n > 80 {
		t.Errorf("Node is %d bytes, over 80", n)
	}
	if n := unsafe.Sizeof(nodeState{}); n > 64 {
		t.Errorf("nodeState is %d bytes, over 64", n)
	}
}
