package fusefs

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// TestMaxPages checks on a real mount that with InitMaxPages a 1 MiB
// read(2) or write(2) reaches the server as one request of 1 MiB, direct
// or through the page cache (with the readahead raised to 1 MiB), and
// that without it the kernel keeps to its default of 128 KiB a request
// (the fallback where MAX_PAGES is not granted).
func TestMaxPages(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		opts    []fuse.MountOption
		wantMax int // largest request expected
	}{
		{"asked", []fuse.MountOption{fuse.RequestInitFlags(fuse.InitMaxPages), fuse.MaxReadahead(mib)}, mib},
		{"not asked", []fuse.MountOption{fuse.MaxReadahead(mib)}, 128 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := newMemFS()
			fsys.root.file("f", make([]byte, mib))
			m := mount(t, fsys, tt.opts...)
			if granted := m.conn.Features()&fuse.InitMaxPages != 0; granted != (tt.wantMax == mib) {
				t.Fatalf("InitMaxPages granted: %v (Features %v)", granted, m.conn.Features())
			}
			if err := fuse.SetReadahead(m.dir, mib); err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(m.dir, "f")
			for _, io := range []struct {
				kind string
				args []string
			}{
				{"read", []string{"if=" + f, "of=/dev/null", "bs=1M", "count=1", "iflag=direct"}},
				{"write", []string{"if=/dev/zero", "of=" + f, "bs=1M", "count=1", "conv=notrunc", "oflag=direct"}},
				{"read", []string{"if=" + f, "of=/dev/null", "bs=1M", "count=1"}},
				{"write", []string{"if=/dev/zero", "of=" + f, "bs=1M", "count=1", "conv=notrunc"}},
			} {
				m.run(t, "dd", io.args...)
				got := fsys.count.take(io.kind)
				t.Logf("dd %q: %s requests of %v bytes", io.args, io.kind, got)
				sum := 0
				for _, n := range got {
					sum += n
				}
				if sum < mib {
					t.Errorf("dd %q: %s requests of %v bytes, less than 1 MiB in all", io.args, io.kind, got)
				}
				if slices.Max(got) > tt.wantMax {
					t.Errorf("dd %q: a %s request of %d bytes, over %d", io.args, io.kind, slices.Max(got), tt.wantMax)
				}
				if tt.wantMax == mib && len(got) != 1 {
					t.Errorf("dd %q: %d %s requests (%v), want one of 1 MiB", io.args, len(got), io.kind, got)
				}
			}
		})
	}
}
