package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDirListingCached (issue #12): on a watched filesystem the kernel
// keeps a directory's listing across opens (FOPEN_CACHE_DIR and
// FOPEN_KEEP_CACHE): a warm `ls -l` sends OPENDIR (the caller's
// permission is checked at every open) and RELEASEDIR, and no READDIR.
// Every change of the entries made directly in the backing directory
// (create, remove, rename in, out and within, a subdirectory made and
// removed, a file created and the directory's mtime set back as rsync -t
// and tar do, which the kernel's own check of mtime would miss) shows in
// the next listing within watchBound; so does a change
// made through the mount, at once. Without invalidation the kernel keeps
// no listing: each `ls` reads the directory from clamfuse.
func TestDirListingCached(t *testing.T) {
	const files = 200
	const watchBound = 2 * time.Second
	for _, watched := range []bool{true, false} {
		t.Run(fmt.Sprintf("invalidation=%v", watched), func(t *testing.T) {
			backing, m, seen := testMount(t, MountOptions{FS: Options{
				AttrValid: time.Second, EntryValid: time.Second, Invalidation: watched, WatchedValid: time.Hour}})
			dir := filepath.Join(backing, "d")
			other := filepath.Join(backing, "other")
			for _, d := range []string{dir, other} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for i := range files {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(other, "visitor"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if watched && !m.fsys.watch.covers(m.fsys.rootN.id.dev) {
				t.Fatalf("the backing filesystem of %s is not watched: %v", backing, m.fsys.watch)
			}
			mdir := filepath.Join(m.Target, "d")
			runOn(t, m, "ls", "-l", mdir)
			seen.takeOps()
			runOn(t, m, "ls", "-l", mdir)
			ops := seen.takeOps()
			t.Logf("warm ls -l of %d entries: %v", files, ops)
			reads := ops["ReadRequest"] + ops["ReadDirPlusRequest"]
			if ops["OpenRequest"] == 0 {
				t.Errorf("no OPENDIR: the caller's permission to list was not checked")
			}
			if watched && reads != 0 {
				t.Errorf("warm listing with invalidation: %d READDIR requests, want none (the kernel's cache)", reads)
			}
			if !watched && reads == 0 {
				t.Errorf("warm listing without invalidation: no READDIR, but nothing would drop a kept listing")
			}

			// Changes made behind the mount, each shown within the bound.
			// (by other processes: the watcher ignores clamfuse's own
			// system calls, and this test is clamfuse)
			steps := []struct {
				what string
				cmd  []string
			}{
				{"create", []string{"touch", filepath.Join(dir, "new")}},
				{"remove", []string{"rm", filepath.Join(dir, "f000")}},
				{"rename within", []string{"mv", filepath.Join(dir, "f001"), filepath.Join(dir, "g001")}},
				{"rename out", []string{"mv", filepath.Join(dir, "f002"), filepath.Join(other, "f002")}},
				{"rename in", []string{"mv", filepath.Join(other, "visitor"), filepath.Join(dir, "visitor")}},
				{"mkdir", []string{"mkdir", filepath.Join(dir, "sub")}},
				{"rmdir", []string{"rmdir", filepath.Join(dir, "sub")}},
				// The kernel would see that the directory's mtime moved,
				// if it did: rsync -t and tar set it back.
				{"create with the directory's times set back", []string{"sh", "-c",
					`touch -r "$1" "$2" && touch "$1/restored" && touch -r "$2" "$1"`, "sh", dir, filepath.Join(backing, "times")}},
			}
			for _, st := range steps {
				runOn(t, m, "ls", mdir) // the listing is cached now
				runOn(t, m, st.cmd[0], st.cmd[1:]...)
				want := listNames(t, dir)
				deadline := time.Now().Add(watchBound)
				for {
					got := strings.Fields(runOn(t, m, "ls", mdir))
					if slices.Equal(got, want) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s behind the mount: after %v the mount lists %d names, the backing directory %d (diff: %v)",
							st.what, watchBound, len(got), len(want), diffNames(got, want))
					}
					time.Sleep(10 * time.Millisecond) // polls a condition
				}
			}
			// Through the mount: the kernel drops its own listing. (From
			// other processes: Go's os.OpenFile registers the file with
			// epoll, whose FUSE POLL this process must answer; made from
			// the test, it once hung in epoll_ctl, which the runtime does
			// not count as a system call, while a GC stopped the world
			// and so the readers that would answer it.)
			runOn(t, m, "ls", mdir)
			runOn(t, m, "touch", filepath.Join(mdir, "made-through"))
			runOn(t, m, "rm", filepath.Join(mdir, "f003"))
			if got, want := strings.Fields(runOn(t, m, "ls", mdir)), listNames(t, dir); !slices.Equal(got, want) {
				t.Errorf("after changes through the mount, the mount lists %v", diffNames(got, want))
			}
		})
	}
}

// listNames is what ls prints of dir: its names, sorted.
func listNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// diffNames is what one listing has that the other has not.
func diffNames(got, want []string) string {
	var only, missing []string
	for _, g := range got {
		if !slices.Contains(want, g) {
			only = append(only, g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	return fmt.Sprintf("only in the mount %v, missing from it %v", only, missing)
}
