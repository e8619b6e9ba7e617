package fs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReopenWritten: a scan after a write that waited in the queue opens
// the file again by its identity, through the node the kernel knows:
// only that very inode, a regular file with a name left; a name swapped
// for another file or a symlink, an unlinked file, or an inode no node
// holds opens nothing.
func TestReopenWritten(t *testing.T) {
	tests := []struct {
		name    string
		then    func(t *testing.T, dir string) // after the node is looked up
		wantErr bool
	}{
		{name: "as written"},
		{name: "renamed within the tree", then: func(t *testing.T, dir string) {
			mustNoErr(t, os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "g")))
			mustNoErr(t, os.Remove(filepath.Join(dir, "f")))
			// The node still knows f only: its name leads nowhere.
		}, wantErr: true},
		{name: "name swapped for another file", then: func(t *testing.T, dir string) {
			mustNoErr(t, os.WriteFile(filepath.Join(dir, "other"), []byte("other"), 0o644))
			mustNoErr(t, os.Rename(filepath.Join(dir, "other"), filepath.Join(dir, "f")))
		}, wantErr: true},
		{name: "name swapped for a symlink", then: func(t *testing.T, dir string) {
			mustNoErr(t, os.Remove(filepath.Join(dir, "f")))
			mustNoErr(t, os.Symlink("/etc/passwd", filepath.Join(dir, "f")))
		}, wantErr: true},
		{name: "unlinked", then: func(t *testing.T, dir string) {
			mustNoErr(t, os.Remove(filepath.Join(dir, "f")))
		}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys, nodes := testTree(t, 1, 16)
			root, err := os.Readlink(procPath(fsys.root))
			mustNoErr(t, err)
			dir := filepath.Join(root, "d00", "sub")
			mustNoErr(t, os.WriteFile(filepath.Join(dir, "f"), []byte("written"), 0o644))
			n := lookupNode(t, fsys, nodes[0], "f")
			if tt.then != nil {
				tt.then(t, dir)
			}
			f, err := fsys.ReopenWritten(n.id.dev, n.id.ino)
			if tt.wantErr {
				if err == nil {
					b, _ := io.ReadAll(f)
					f.Close()
					t.Fatalf("opened %q; want an error", b)
				}
				return
			}
			mustNoErr(t, err)
			defer f.Close()
			if f.Name() != "d00/sub/f" {
				t.Errorf("name %q; want d00/sub/f", f.Name())
			}
			b, err := io.ReadAll(f)
			if err != nil || string(b) != "written" {
				t.Errorf("read %q, %v; want the file written", b, err)
			}
			flags, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
			if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_NOATIME == 0 || flags&unix.O_NONBLOCK != 0 {
				t.Errorf("flags %#o; want read-only, O_NOATIME, blocking", flags)
			}
		})
	}
	t.Run("no such node", func(t *testing.T) {
		fsys, _ := testTree(t, 0, 16)
		if _, err := fsys.ReopenWritten(1, 12345); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("ReopenWritten of an inode no node holds: %v; want ENOENT", err)
		}
	})
}
