package fs

import (
	"errors"
	"testing"

	"github.com/clamfuse/clamfuse/cache"
)

// The check of the bytes a handle serves (served.go): the page cache is
// kept at the next open only when every byte served since the contents
// were judged was one judged.
func TestServed(t *testing.T) {
	judged := []byte("judged contents, sixteen x 2 ok!")
	other := []byte("judged contents, SIXTEEN x 2 ok!")
	sum := func(b []byte) uint64 { d := cache.NewDigest(); d.Write(b); return d.Sum() }
	type read struct {
		off  int64
		data []byte
		err  error
	}
	tests := []struct {
		name        string
		reads       []read
		wantReading int32 // before the close
		wantKeep    bool  // the node's page cache kept at the next open
	}{
		{"whole, in one READ", []read{{0, judged, nil}}, 0, true},
		{"whole, in two READs", []read{{0, judged[:10], nil}, {10, judged[10:], nil}}, 0, true},
		{"whole, twice", []read{{0, judged, nil}, {0, judged, nil}}, 0, true},
		{"a READ at the end only", []read{{int64(len(judged)), nil, nil}}, 0, true},
		{"other bytes", []read{{0, other, nil}}, 1, false},
		{"other bytes in the second READ", []read{{0, judged[:10], nil}, {10, other[10:], nil}}, 1, false},
		{"out of order", []read{{10, judged[10:], nil}, {0, judged[:10], nil}}, 1, false},
		{"short: the file shrank", []read{{0, judged[:10], nil}, {10, nil, nil}}, 1, false},
		{"a read error", []read{{0, nil, errors.New("EIO")}}, 1, false},
		{"never to the end", []read{{0, judged[:10], nil}}, 1, false},
		{"after a good pass, other bytes", []read{{0, judged, nil}, {0, other, nil}}, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{}
			h := &Handle{node: n, sum: sum(judged), size: int64(len(judged))}
			if n.keepCache(cacheKey, h.sum, nil) {
				t.Fatal("the first open kept a page cache")
			}
			for _, r := range tt.reads {
				h.readStarts()
				h.servedBytes(r.off, r.data, r.err)
			}
			if r := n.readingLocked(); r != tt.wantReading {
				t.Errorf("reading = %d before the close; want %d", r, tt.wantReading)
			}
			h.servedClose()
			if r := n.readingLocked(); r != 0 {
				t.Errorf("reading = %d after the close; want 0", r)
			}
			if got := n.keepCache(cacheKey, h.sum, nil); got != tt.wantKeep {
				t.Errorf("next open keeps the page cache: %v; want %v", got, tt.wantKeep)
			}
		})
	}
}

var cacheKey = cache.Key{Dev: 1, Ino: 2, Size: 32}

// A handle whose contents are not verified (sum 0) checks nothing.
func TestServedUnverified(t *testing.T) {
	n := &Node{}
	h := &Handle{node: n, size: 4}
	n.keepCache(cacheKey, 0, nil)
	h.readStarts()
	h.servedBytes(2, []byte("xx"), nil)
	if r := n.readingLocked(); r != 0 || !n.keepCache(cacheKey, 0, nil) {
		t.Errorf("reading %d, keep lost: an unverified handle changed the node", r)
	}
}
