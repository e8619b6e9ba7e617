package fusefs

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

func init() {
	// tmpfile DIR NAME: open DIR with O_TMPFILE, write to the file, read
	// it back, then give it NAME in DIR (linkat); prints the size.
	helperOps["tmpfile"] = struct {
		args int
		run  func(args []string) (string, error)
	}{2, func(args []string) (string, error) {
		fd, err := unix.Open(args[0], unix.O_TMPFILE|unix.O_RDWR, 0o640)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, []byte("unnamed")); err != nil {
			return "", err
		}
		buf := make([]byte, 16)
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return "", err
		}
		if string(buf[:n]) != "unnamed" {
			return "", fmt.Errorf("read back %q", buf[:n])
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return "", err
		}
		proc := fmt.Sprintf("/proc/self/fd/%d", fd)
		if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, filepath.Join(args[0], args[1]), unix.AT_SYMLINK_FOLLOW); err != nil {
			return "", err
		}
		return fmt.Sprintf("size=%d", st.Size), nil
	}}
}

// tmpDir is a memDir that creates unnamed files.
type tmpDir struct {
	*memDir
	mu   sync.Mutex
	reqs []fuse.TmpfileRequest
}

var _ NodeTmpfiler = (*tmpDir)(nil)

func (d *tmpDir) Tmpfile(ctx context.Context, req *fuse.TmpfileRequest, resp *fuse.CreateResponse) (Node, Handle, error) {
	d.mu.Lock()
	d.reqs = append(d.reqs, *req)
	d.mu.Unlock()
	f := &memFile{fs: d.fs, inode: d.fs.nextInode()}
	return f, f, nil
}

// TestTmpfile checks open(2) with O_TMPFILE on a real mount: a
// NodeTmpfiler creates the unnamed file, which is written, read, and then
// named with linkat(2); without one the open fails with EOPNOTSUPP.
func TestTmpfile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tmpfile bool
		want    string
	}{
		{"NodeTmpfiler", true, "ok size=7"},
		{"not", false, "EOPNOTSUPP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := newMemFS()
			d := &tmpDir{memDir: fsys.root.dir("d")}
			if tc.tmpfile {
				fsys.root.mu.Lock()
				fsys.root.entries["d"] = d
				fsys.root.mu.Unlock()
			}
			m := mount(t, fsys)
			dir := filepath.Join(m.dir, "d")
			if got := m.helper(t, "tmpfile", dir, "named"); got != tc.want {
				t.Fatalf("O_TMPFILE: %s, want %s", got, tc.want)
			}
			if !tc.tmpfile {
				return
			}
			if got := m.run(t, "cat", filepath.Join(dir, "named")); got != "unnamed" {
				t.Errorf("the file, once named, holds %q", got)
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if len(d.reqs) != 1 {
				t.Fatalf("%d TMPFILE requests, want 1", len(d.reqs))
			}
			r := d.reqs[0]
			t.Logf("%v", &r)
			if r.Flags&fuse.OpenAccessModeMask != fuse.OpenReadWrite || r.Mode.Perm() != 0o640&^r.Umask {
				t.Errorf("TMPFILE flags %v mode %v umask %v; want O_RDWR, 0640 less the umask", r.Flags, r.Mode, r.Umask)
			}
		})
	}
}
