package fusefs

import (
	"context"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// attrCounter is a node whose Attr says size 1 and counts its calls.
type attrCounter struct{ calls int }

func (a *attrCounter) Attr(ctx context.Context, attr *fuse.Attr) error {
	a.calls++
	attr.Inode, attr.Size = 7, 1
	return nil
}

// TestLookupAttr: attributes the lookup's handler filled (Inode set) are
// answered as they are, without asking the node; none filled, the node
// is asked, as upstream does.
func TestLookupAttr(t *testing.T) {
	for _, tt := range []struct {
		name      string
		filled    fuse.Attr
		wantCalls int
		wantSize  uint64
	}{
		{"filled by the lookup", fuse.Attr{Inode: 42, Size: 1234}, 0, 1234},
		{"none filled", fuse.Attr{}, 1, 1},
		{"size without inode is not filled", fuse.Attr{Size: 99}, 1, 1},
	} {
		n := &attrCounter{}
		attr := tt.filled
		if err := lookupAttr(context.Background(), n, &attr); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if n.calls != tt.wantCalls || attr.Size != tt.wantSize {
			t.Errorf("%s: Attr called %d times, size %d; want %d, %d", tt.name, n.calls, attr.Size, tt.wantCalls, tt.wantSize)
		}
	}
}
