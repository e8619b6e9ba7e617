package fusefs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// ptFile is a file whose data is the backing file path. Read-only opens
// are passed through to it when the kernel granted passthrough (else
// served with READs, counted); other opens are always served.
type ptFile struct {
	fs    *memFS
	inode uint64
	path  string

	mu         sync.Mutex
	backingErr error // of the last BackingOpen
}

var _ NodeOpener = (*ptFile)(nil)

func (f *ptFile) Attr(ctx context.Context, a *fuse.Attr) error {
	st, err := os.Stat(f.path)
	if err != nil {
		return err
	}
	a.Inode = f.inode
	a.Mode = 0o644
	a.Size = uint64(st.Size())
	a.Valid = 0
	return nil
}

func (f *ptFile) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (Handle, error) {
	file, err := os.OpenFile(f.path, int(req.Flags&fuse.OpenAccessModeMask), 0)
	if err != nil {
		return nil, err
	}
	h := &ptHandle{f: f, file: file}
	if req.Flags.IsReadOnly() {
		id, err := req.Conn.BackingOpen(int(file.Fd()))
		f.mu.Lock()
		f.backingErr = err
		f.mu.Unlock()
		if err == nil {
			h.backingID = id
			resp.Flags |= fuse.OpenPassthrough
			resp.BackingID = id
		}
	}
	return h, nil
}

type ptHandle struct {
	f         *ptFile
	file      *os.File
	backingID int32 // 0: none
}

var (
	_ HandleReader   = (*ptHandle)(nil)
	_ HandleReleaser = (*ptHandle)(nil)
)

func (h *ptHandle) Read(ctx context.Context, req *fuse.ReadRequest, resp *fuse.ReadResponse) error {
	h.f.fs.count.add("read", req.Size)
	buf := make([]byte, req.Size)
	n, err := h.file.ReadAt(buf, req.Offset)
	if n == 0 && err != nil && err.Error() != "EOF" {
		return err
	}
	resp.Data = buf[:n]
	return nil
}

func (h *ptHandle) Release(ctx context.Context, req *fuse.ReleaseRequest) error {
	if h.backingID != 0 {
		if err := req.Conn.BackingClose(h.backingID); err != nil {
			return err
		}
	}
	return h.file.Close()
}

// TestPassthrough checks on a real mount that a file opened with
// FOPEN_PASSTHROUGH is read by the kernel from the backing file, no READ
// reaching the server, and that without passthrough granted the same
// file system falls back to serving READs.
func TestPassthrough(t *testing.T) {
	content := strings.Repeat("passed through\n", 100000) // 1.5 MB
	backing := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(backing, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		opts   []fuse.MountOption
		passed bool
	}{
		{"granted", []fuse.MountOption{fuse.Passthrough(1)}, true},
		{"not asked", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := newMemFS()
			pt := &ptFile{fs: fsys, inode: fsys.nextInode(), path: backing}
			fsys.root.mu.Lock()
			fsys.root.entries["f"] = pt
			fsys.root.mu.Unlock()
			m := mount(t, fsys, tt.opts...)
			if granted := m.conn.Features2()&fuse.InitPassthrough != 0; granted != tt.passed {
				t.Fatalf("InitPassthrough granted: %v, want %v (protocol %v, Features %v, Features2 %v)",
					granted, tt.passed, m.conn.Protocol(), m.conn.Features(), m.conn.Features2())
			}
			if tt.passed && m.conn.Protocol() != (fuse.Protocol{Major: 7, Minor: 40}) {
				t.Errorf("protocol %v, want 7.40", m.conn.Protocol())
			}

			got := m.run(t, "cat", filepath.Join(m.dir, "f"))
			if got != content {
				t.Fatalf("read %d bytes through the mount, not the backing file's %d", len(got), len(content))
			}
			reads := fsys.count.take("read")
			pt.mu.Lock()
			backingErr := pt.backingErr
			pt.mu.Unlock()
			t.Logf("BackingOpen: %v; %d READs", backingErr, len(reads))
			if tt.passed {
				if backingErr != nil {
					t.Errorf("BackingOpen: %v", backingErr)
				}
				if len(reads) != 0 {
					t.Errorf("%d READs reached the server of a passed-through file", len(reads))
				}
			} else {
				if backingErr != syscall.EPERM {
					t.Errorf("BackingOpen without passthrough: %v, want EPERM", backingErr)
				}
				if len(reads) == 0 {
					t.Error("no READ reached the server, yet nothing was passed through")
				}
			}

			if tt.passed {
				// A page-cache open (read-write here) of the inode while it
				// is open with passthrough fails: the kernel keeps them apart.
				out := m.run(t, "sh", "-c", `exec 3<"$1"; (exec 4<>"$1") 2>&1 && echo mixed; true`, "sh", filepath.Join(m.dir, "f"))
				t.Logf("read-write open beside a passthrough one: %q", strings.TrimSpace(out))
				if strings.Contains(out, "mixed") {
					t.Error("the kernel let an inode be open with and without passthrough at once")
				}
			}
		})
	}
}
