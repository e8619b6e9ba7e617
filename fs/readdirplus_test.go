package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// liveNodes is how many nodes the filesystem holds (the kernel knows).
func (f *FS) liveNodes() int {
	f.treeMu.Lock()
	defer f.treeMu.Unlock()
	return f.nodes.len()
}

// TestReaddirPlusLookups (issue #12): with READDIRPLUS, `ls -l` gets the
// nodes and attributes of a directory's entries from the listing, with no
// LOOKUP per name; the kernel counts each entry so sent as a lookup, and
// once it drops its caches it forgets them all: no node is left behind.
// Without it, the same listing takes a LOOKUP per name.
func TestReaddirPlusLookups(t *testing.T) {
	const files = 300
	for _, mode := range []ReaddirPlus{ReaddirPlusOn, ReaddirPlusAuto, ReaddirPlusOff} {
		t.Run(mode.String(), func(t *testing.T) {
			backing, m, seen := testMount(t, MountOptions{FS: Options{ReaddirPlus: mode,
				AttrValid: time.Second, EntryValid: time.Second, Invalidation: true, WatchedValid: time.Hour}})
			for i := range files {
				if err := os.WriteFile(filepath.Join(backing, fmt.Sprintf("f%03d", i)), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Mkdir(filepath.Join(backing, "d"), 0o755); err != nil {
				t.Fatal(err)
			}
			seen.takeOps()
			runOn(t, m, "ls", "-l", "--color=never", m.Target)
			ops := seen.takeOps()
			t.Logf("ls -l of %d entries: %v", files+1, ops)
			lookups, plus := ops["LookupRequest"], ops["ReadDirPlusRequest"]
			switch mode {
			case ReaddirPlusOn:
				if plus == 0 || lookups > 0 {
					t.Errorf("READDIRPLUS on: %d READDIRPLUS, %d LOOKUP; want some and none", plus, lookups)
				}
			case ReaddirPlusOff:
				if plus != 0 || lookups < files {
					t.Errorf("READDIRPLUS off: %d READDIRPLUS, %d LOOKUP; want none and one per name", plus, lookups)
				}
			}
			runOn(t, m, "ls", "-l", "--color=never", m.Target)
			t.Logf("again, warm: %v", seen.takeOps())
			if n := m.fsys.liveNodes(); n < files {
				t.Errorf("%d nodes after ls -l of %d names", n, files)
			}
			// Drop the kernel's dentries and inodes: every node must be
			// forgotten (the root is not in the table).
			deadline := time.Now().Add(30 * time.Second)
			for {
				if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
					t.Fatalf("drop_caches: %v", err)
				}
				n := m.fsys.liveNodes()
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d nodes still live 30 s after dropping the kernel's caches: lookups and forgets do not balance", n)
				}
				time.Sleep(50 * time.Millisecond) // the kernel's FORGETs arrive in batches
			}
		})
	}
}

// TestMountMetadataFeatures (issue #12): the kernel grants what the
// metadata paths rely on: parallel directory operations (lookups and
// listings in one directory are not serialised by the kernel), cached
// symlinks, cached POSIX ACLs, and READDIRPLUS as mount.readdirplus says.
func TestMountMetadataFeatures(t *testing.T) {
	for _, c := range []struct {
		mode ReaddirPlus
		want fuse.InitFlags
		not  fuse.InitFlags
	}{
		{ReaddirPlusAuto, fuse.InitDoReaddirplus | fuse.InitReaddirplusAuto, 0},
		{ReaddirPlusOn, fuse.InitDoReaddirplus, fuse.InitReaddirplusAuto},
		{ReaddirPlusOff, 0, fuse.InitDoReaddirplus | fuse.InitReaddirplusAuto},
	} {
		t.Run(c.mode.String(), func(t *testing.T) {
			_, m, _ := testMount(t, MountOptions{FS: Options{ReaddirPlus: c.mode}})
			f := m.conn.Features()
			want := c.want | fuse.InitParallelDirOps | fuse.InitCacheSymlinks | fuse.InitPosixACL
			if f&want != want || f&c.not != 0 {
				t.Errorf("granted %v; want %v, not %v", f, want, c.not)
			}
		})
	}
}
