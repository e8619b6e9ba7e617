package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
)

// stuckMount mounts on dir a FUSE filesystem that never answers: not even
// its INIT, so that every request to it, as root's, waits for good. It is
// torn down at cleanup (its connection first, which fails whatever waits
// on it). It stands for a mount a hostile user controls (fusermount3, or
// user_allow_other), at its worst.
func stuckMount(t *testing.T, dir string) {
	t.Helper()
	stuckMountNow(t, dir)
}

// stuckMountNow is stuckMount, torn down by the func it returns (or at
// cleanup): while it hides the mount, nothing else can reach it by path.
func stuckMountNow(t *testing.T, dir string) func() {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", fd)
	if err := unix.Mount("stuck", dir, "fuse.stuck", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		t.Fatalf("mount of a FUSE filesystem that never answers on %s: %v", dir, err)
	}
	var once sync.Once
	down := func() {
		once.Do(func() {
			unix.Close(fd)
			unix.Unmount(dir, unix.MNT_DETACH)
		})
	}
	t.Cleanup(down)
	return down
}

// TestRefreshHostilePath (fs/stock.go, refreshAttr): after the judged
// bytes of a file just written are stored, its attributes are refreshed
// with a stat of its path through the mount, from the watcher's notifier
// (or, without a watcher, from the goroutine of the scan after the
// write). A hostile user who can change the path meanwhile must not be
// able to hold that goroutine up, nor have it leave the mount: a
// directory of the path swapped (behind the mount) for a symlink to a
// mount that never answers, such a mount put on a directory of the path
// inside the mount, or the directory renamed in a loop. Each time the
// refresh must end, and the watcher must still pass on changes after it.
func TestRefreshHostilePath(t *testing.T) {
	for _, watched := range []bool{true, false} {
		t.Run(fmt.Sprintf("watched=%v", watched), func(t *testing.T) {
			// The mountpoint's parent holds it alone: a mount on the
			// parent hides nothing else the test needs (clamd's socket).
			mo := MountOptions{Target: filepath.Join(t.TempDir(), "parent", "mnt"), FS: Options{AttrValid: time.Second, EntryValid: time.Second,
				Invalidation: watched, WatchedValid: time.Hour}}
			mustDo(t, os.MkdirAll(mo.Target, 0o755))
			backing, m, _ := testMountGate(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: 1 << 20})
			if got := m.Watching(); got != watched {
				t.Fatalf("watching: %v; want %v", got, watched)
			}
			stuck := filepath.Join(t.TempDir(), "stuck")
			mustDo(t, os.Mkdir(stuck, 0o755))
			stuckMount(t, stuck)

			for i, tc := range []struct {
				name string
				// swap changes the path of the file being written, c/d/f,
				// while the writer has it open; it returns a func that
				// stops what it started, if anything.
				swap func(t *testing.T, c string) func()
			}{
				{"unchanged", func(*testing.T, string) func() { return func() {} }},
				{"directory swapped for a symlink to a mount that never answers", func(t *testing.T, c string) func() {
					mustDo(t, os.Rename(filepath.Join(backing, c, "d"), filepath.Join(backing, c, "d.old")))
					mustDo(t, os.Symlink(stuck, filepath.Join(backing, c, "d")))
					return func() {}
				}},
				{"directory swapped for a relative symlink to a mount that never answers", func(t *testing.T, c string) func() {
					rel, err := filepath.Rel(filepath.Join(backing, c), stuck)
					mustDo(t, err)
					mustDo(t, os.Rename(filepath.Join(backing, c, "d"), filepath.Join(backing, c, "d.old")))
					mustDo(t, os.Symlink(rel, filepath.Join(backing, c, "d")))
					return func() {}
				}},
				{"a mount that never answers on the directory, inside the mount", func(t *testing.T, c string) func() {
					stuckMount(t, filepath.Join(m.Target, c, "d"))
					return func() {}
				}},
				{"a mount that never answers stacked on the mountpoint", func(t *testing.T, c string) func() {
					return stuckMountNow(t, m.Target)
				}},
				{"a mount that never answers on the mountpoint's parent", func(t *testing.T, c string) func() {
					return stuckMountNow(t, filepath.Dir(m.Target))
				}},
				{"directory renamed and swapped for symlinks in a loop", func(t *testing.T, c string) func() {
					d, e := filepath.Join(backing, c, "d"), filepath.Join(backing, c, "e")
					stop := make(chan struct{})
					var wg sync.WaitGroup
					wg.Add(1)
					go func() {
						defer wg.Done()
						for k := 0; ; k++ {
							select {
							case <-stop:
								return
							default:
							}
							os.Rename(d, e)
							if k%2 == 0 {
								os.Symlink(stuck, d)
								os.Remove(d)
							}
							os.Rename(e, d)
						}
					}()
					return func() { close(stop); wg.Wait() }
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c := fmt.Sprintf("c%d", i)
					mustDo(t, os.MkdirAll(filepath.Join(backing, c, "d"), 0o755))
					mustWrite(t, filepath.Join(backing, c, "probe"), []byte("1"))
					f := filepath.Join(m.Target, c, "d", "f")
					probe := filepath.Join(m.Target, c, "probe")
					runOn(t, m, "stat", probe) // known to the kernel, its attributes cached

					// The writer opens f through the mount, then waits.
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					w := hangReported(t, exec.CommandContext(ctx, "sh", "-c", "exec 3>"+f+"; read x; printf 'judged, then stored' >&3; exec 3>&-"))
					in, err := w.StdinPipe()
					mustDo(t, err)
					var out strings.Builder
					w.Stdout, w.Stderr = &out, &out
					mustDo(t, w.Start())
					bf := filepath.Join(backing, c, "d", "f")
					waitFor(t, "the writer's open", func() bool {
						_, err := os.Stat(bf)
						return err == nil && openHandles(t, m, bf) == 1
					})
					stocked := m.fsys.stocked.Load()
					stop := tc.swap(t, c)
					in.Close()
					if err := w.Wait(); err != nil {
						stop()
						t.Fatalf("writer: %v\n%s", err, out.String())
					}
					// The store and the refresh after it end, whatever the
					// path leads to now.
					deadline := time.Now().Add(20 * time.Second)
					for m.fsys.stocked.Load() == stocked {
						if time.Now().After(deadline) {
							var all strings.Builder
							pprof.Lookup("goroutine").WriteTo(&all, 1)
							stop()
							t.Fatalf("the attribute refresh after the store did not end within 20s: held up by the path; goroutines:\n%s", all.String())
						}
						time.Sleep(5 * time.Millisecond)
					}
					stop()
					if !watched {
						return
					}
					// The notifier goes on: a change behind the mount reaches
					// the kernel (its attributes are valid for an hour).
					// (By another process: the watcher drops the events of
					// clamfuse's own, this test's.)
					runOn(t, m, "sh", "-c", "printf 22 > "+filepath.Join(backing, c, "probe"))
					waitFor(t, "the change behind the mount passed on", func() bool {
						return strings.TrimSpace(runOn(t, m, "stat", "-c", "%s", probe)) == "2"
					})
				})
			}
		})
	}
}
