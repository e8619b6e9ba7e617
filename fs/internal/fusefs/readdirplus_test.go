package fusefs

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// plusDir is a memDir that lists itself for READDIRPLUS: ".", "..", then
// its entries by name, at offsets 1, 2, ...
type plusDir struct {
	*memDir
	parent Node
	calls  atomic.Int32 // READDIRPLUS requests
	plain  atomic.Int32 // READDIR requests
}

var _ HandleReadDirPluser = (*plusDir)(nil)

func (d *plusDir) ReadDirPlus(ctx context.Context, req DirRead) ([]DirentPlus, error) {
	if req.Plus {
		d.calls.Add(1)
	} else {
		d.plain.Add(1)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ents := []DirentPlus{
		{Dirent: fuse.Dirent{Inode: d.inode, Type: fuse.DT_Dir, Name: "."}, Node: d},
		{Dirent: fuse.Dirent{Type: fuse.DT_Dir, Name: ".."}, Node: d.parent},
	}
	for _, name := range slices.Sorted(mapKeys(d.entries)) {
		e := DirentPlus{Dirent: fuse.Dirent{Name: name}, Node: d.entries[name], EntryValid: time.Minute}
		switch n := e.Node.(type) {
		case *memFile:
			e.Inode, e.Type = n.inode, fuse.DT_File
		case *memDir:
			e.Inode, e.Type = n.inode, fuse.DT_Dir
		}
		ents = append(ents, e)
	}
	for i := range ents {
		ents[i].Offset = uint64(i + 1)
	}
	if req.Offset >= int64(len(ents)) {
		return nil, nil
	}
	return ents[req.Offset:], nil
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// debugLog keeps the server's debug messages that name a bug.
type debugLog struct {
	mu   sync.Mutex
	bugs []string
}

func (l *debugLog) debug(msg interface{}) {
	if s := fmt.Sprint(msg); strings.Contains(s, "bug") {
		l.mu.Lock()
		l.bugs = append(l.bugs, s)
		l.mu.Unlock()
	}
}

// names returns the names a listing should show for n files.
func names(n int) []string {
	var s []string
	for i := range n {
		// Long names, so the listing takes several READDIRPLUS.
		s = append(s, fmt.Sprintf("file-%03d-%s", i, strings.Repeat("x", 100)))
	}
	return s
}

// TestReadDirPlus lists directories through a mount that asked for
// READDIRPLUS, from a HandleReadDirPluser and from a HandleReadDirAller,
// across several requests, and checks the lookup counts: entries listed
// with their nodes are not looked up again, and the kernel's FORGETs of
// them (after the names are invalidated) bring every node's references
// back to 0, "." and ".." having not been counted.
func TestReadDirPlus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags fuse.InitFlags
		plus  bool // a HandleReadDirPluser; else the ReadDirAll fallback
	}{
		{"pluser", fuse.InitDoReaddirplus, true},
		{"ReadDirAll fallback", fuse.InitDoReaddirplus, false},
		{"ReadDirAll fallback, auto", fuse.InitDoReaddirplus | fuse.InitReaddirplusAuto, false},
		{"pluser, auto", fuse.InitDoReaddirplus | fuse.InitReaddirplusAuto, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := newMemFS()
			d := &plusDir{memDir: &memDir{fs: fsys, inode: fsys.nextInode(), entries: map[string]Node{}}, parent: fsys.root}
			var dir Node = d.memDir
			if tc.plus {
				dir = d
			}
			fsys.root.mu.Lock()
			fsys.root.entries["d"] = dir
			fsys.root.mu.Unlock()
			want := names(300) // more than one READDIRPLUS holds
			var files []*memFile
			for _, n := range want {
				files = append(files, d.file(n, []byte(n)))
			}
			var log debugLog
			m := mountWith(t, fsys, &Config{Debug: log.debug}, fuse.RequestInitFlags(tc.flags))
			if got := m.conn.Features() & (fuse.InitDoReaddirplus | fuse.InitReaddirplusAuto); got != tc.flags {
				t.Fatalf("granted %v, want %v", got, tc.flags)
			}

			// A listing alone (ls -f: no stat, no sort), where with
			// fuse.InitReaddirplusAuto the kernel reads the first piece
			// with READDIRPLUS, the others with READDIR; then listings
			// with stats.
			out := m.run(t, "ls", "-f", filepath.Join(m.dir, "d"))
			got := strings.Fields(out)
			slices.Sort(got)
			w := want
			if tc.plus {
				w = append([]string{".", ".."}, want...) // memDir's ReadDirAll lists neither
			}
			if !slices.Equal(got, w) {
				t.Fatalf("ls -f lists %d names %q..., want %d", len(got), got[:min(3, len(got))], len(w))
			}
			for range 2 {
				out := m.run(t, "ls", "-l", filepath.Join(m.dir, "d"))
				var got []string
				for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] { // "total N" first
					f := strings.Fields(line)
					got = append(got, f[len(f)-1])
				}
				if !slices.Equal(got, want) {
					t.Fatalf("ls -l lists %d names %q..., want %d", len(got), got[:min(3, len(got))], len(want))
				}
			}
			t.Logf("READDIRPLUS to the pluser: %d, READDIR %d; LOOKUPs in d: %d", d.calls.Load(), d.plain.Load(), d.lookups.Load())
			if tc.plus {
				if tc.flags&fuse.InitReaddirplusAuto != 0 && d.plain.Load() == 0 {
					t.Errorf("no READDIR reached the handle: the listing did not mix the two")
				}
				if d.calls.Load() < 2 {
					t.Errorf("%d READDIRPLUS reached the handle, want several", d.calls.Load())
				}
				// None, unless the kernel dropped some entries meanwhile
				// (memory pressure, drop_caches: the machine is shared).
				if d.lookups.Load() >= int32(len(want)) {
					t.Errorf("%d LOOKUPs of %d entries listed with their nodes", d.lookups.Load(), len(want))
				}
			} else if d.lookups.Load() < int32(len(want)) {
				t.Errorf("%d LOOKUPs of %d entries listed without nodes", d.lookups.Load(), len(want))
			}

			// Let the kernel forget the files and d: its FORGETs must
			// bring every node's references to 0 (the kernel may have
			// forgotten some before, and looked them up again).
			for _, n := range want {
				if err := m.srv.InvalidateEntry(dir, n); err != nil && err != fuse.ErrNotCached {
					t.Errorf("InvalidateEntry %s: %v", n, err)
				}
			}
			if err := m.srv.InvalidateEntry(fsys.root, "d"); err != nil && err != fuse.ErrNotCached {
				t.Errorf("InvalidateEntry d: %v", err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				live := 0
				m.srv.meta.Lock()
				for _, f := range files {
					if _, ok := m.srv.nodeRef[f]; ok {
						live++
					}
				}
				_, dirLive := m.srv.nodeRef[dir]
				m.srv.meta.Unlock()
				if live == 0 && !dirLive {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the invalidations, %d of %d files still referenced, the directory: %v", live, len(files), dirLive)
				}
				time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
			}
			for _, f := range files {
				if f.forgets.Load() == 0 {
					t.Fatalf("a file forgotten by the kernel was not told (Forget)")
				}
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			if len(log.bugs) > 0 {
				t.Errorf("the server's reference counts disagree with the kernel's: %q", log.bugs)
			}
		})
	}
}
