package fusefs

import (
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

func init() {
	helperOps["rename2"] = struct {
		args int
		run  func(args []string) (string, error)
	}{3, func(args []string) (string, error) {
		fl, err := strconv.ParseUint(args[2], 0, 32)
		if err != nil {
			return "", err
		}
		return "", unix.Renameat2(unix.AT_FDCWD, args[0], unix.AT_FDCWD, args[1], uint(fl))
	}}
}

func TestRenameFlagsGate(t *testing.T) {
	plain := &memDir{}
	flags := &flagDir{memDir: plain}
	for _, tt := range []struct {
		name  string
		node  Node
		flags fuse.RenameFlags
		want  error
	}{
		{"no flags, plain", plain, 0, nil},
		{"no flags, flagger", flags, 0, nil},
		{"noreplace, plain", plain, fuse.RenameNoReplace, syscall.ENOSYS},
		{"noreplace, flagger", flags, fuse.RenameNoReplace, nil},
		{"exchange, flagger", flags, fuse.RenameExchange, nil},
		{"whiteout, flagger without it", flags, fuse.RenameWhiteout, syscall.EINVAL},
	} {
		if err := renameFlags(tt.node, &fuse.RenameRequest{Flags: tt.flags}); err != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// TestRename2 checks renameat2(2) on a real mount: flags reach a
// NodeRenameFlagger, and fail with EINVAL without touching anything on a
// NodeRenamer that does not say it honours them.
func TestRename2(t *testing.T) {
	const (
		noreplace = unix.RENAME_NOREPLACE
		exchange  = unix.RENAME_EXCHANGE
		whiteout  = unix.RENAME_WHITEOUT
	)
	type step struct {
		old, new string
		flags    int
		want     string
	}
	for _, tc := range []struct {
		name    string
		flagger bool
		steps   []step
		files   map[string]string // names and contents after the steps
	}{
		{"NodeRenamer", false, []step{
			{"a", "c", noreplace, "EINVAL"},
			{"a", "b", exchange, "EINVAL"},
			{"a", "c", 0, "ok"},
		}, map[string]string{"b": "B", "c": "A"}},
		{"NodeRenameFlagger", true, []step{
			{"a", "c", noreplace, "ok"},
			{"c", "b", noreplace, "EEXIST"},
			{"c", "b", exchange, "ok"},
			{"c", "b", whiteout, "EINVAL"},
			{"c", "d", 0, "ok"},
		}, map[string]string{"b": "A", "d": "B"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := newMemFS()
			d := fsys.root.dir("d")
			var dir Node = d
			if tc.flagger {
				dir = &flagDir{memDir: d}
			}
			fsys.root.mu.Lock()
			fsys.root.entries["d"] = dir
			fsys.root.mu.Unlock()
			d.file("a", []byte("A"))
			d.file("b", []byte("B"))
			m := mount(t, fsys)
			for _, s := range tc.steps {
				got := m.helper(t, "rename2", filepath.Join(m.dir, "d", s.old), filepath.Join(m.dir, "d", s.new), strconv.Itoa(s.flags))
				if got != s.want {
					t.Errorf("renameat2 %s %s %#x: %s, want %s", s.old, s.new, s.flags, got, s.want)
				}
			}
			// Read back by another process: this one serves the mount.
			out := m.run(t, "sh", "-c", `for f in "$1"/*; do echo "${f##*/}=$(cat "$f")"; done`, "sh", filepath.Join(m.dir, "d"))
			got := map[string]string{}
			for _, line := range strings.Fields(out) {
				name, content, _ := strings.Cut(line, "=")
				got[name] = content
			}
			if len(got) != len(tc.files) {
				t.Errorf("the directory holds %v, want %v", got, tc.files)
			}
			for n, c := range tc.files {
				if got[n] != c {
					t.Errorf("the directory holds %v, want %v", got, tc.files)
					break
				}
			}
		})
	}
}
