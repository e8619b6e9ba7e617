package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// TestStockRaced: a hostile user who owns a small file writes judged-clean
// bytes to it through the mount, which clamfuse then stores in the
// kernel's page cache (stock.go), and races that store with infected
// bytes of the same size: written through the mount by a writer of their
// own, through a shared mapping of the backing file, or by a plain write
// to the backing file with its times put back; at once after the write,
// as the scan after it starts, and once the store is made. Once the
// infected bytes are in, another user's read through the mount is
// denied: never the infected bytes, never the stored clean ones.
func TestStockRaced(t *testing.T) {
	const hostile, reader = 64011, 64012
	eicar := clamdtest.EICAR()
	clean := []byte(strings.Repeat("c", len(eicar)))
	for _, mode := range passthroughModes {
		t.Run(mode.name, func(t *testing.T) {
			g := &countingGate{}
			mo := mode.mo
			mo.AllowOther = true
			mo.FS = Options{Gate: g, AttrValid: time.Second, EntryValid: time.Second, Invalidation: true, WatchedValid: time.Hour}
			backing, m, _ := testMountGate(t, mo, cache.Options{MaxEntries: 1000, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: 1 << 20})
			openToAll(t, backing, m)
			tmp := t.TempDir()
			mustDo(t, os.Chmod(tmp, 0o755))
			mustWrite(t, filepath.Join(tmp, "clean"), clean)
			mustWrite(t, filepath.Join(tmp, "eicar"), eicar)
			for _, how := range []struct {
				name string
				do   func(t *testing.T, b, f string)
			}{
				{"a writer through the mount", func(t *testing.T, _, f string) {
					runAs(t, m, hostile, "exec 3<>"+f+"; cat "+filepath.Join(tmp, "eicar")+" >&3; exec 3>&-")
				}},
				{"a shared mapping behind the mount", func(t *testing.T, b, _ string) { mapWrite(t, b, eicar) }},
				{"a write behind the mount, times put back", func(t *testing.T, b, _ string) {
					var st unix.Stat_t
					mustDo(t, unix.Stat(b, &st))
					fd, err := unix.Open(b, unix.O_WRONLY|unix.O_CLOEXEC, 0)
					mustDo(t, err)
					_, err = unix.Pwrite(fd, eicar, 0)
					unix.Close(fd)
					mustDo(t, err)
					mustDo(t, unix.UtimesNano(b, []unix.Timespec{st.Atim, st.Mtim}))
				}},
			} {
				for _, when := range []string{"at once", "as the scan starts", "once stored"} {
					t.Run(how.name+"/"+when, func(t *testing.T) {
						for round := range 4 {
							name := fmt.Sprintf("f-%s-%s-%d", strings.ReplaceAll(how.name, " ", "_"), strings.ReplaceAll(when, " ", "_"), round)
							b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
							stocked, prescans := m.fsys.stocked.Load(), g.prescans.Load()
							runAs(t, m, hostile, "cat "+filepath.Join(tmp, "clean")+" > "+f)
							switch when {
							case "as the scan starts":
								waitFor(t, "the scan after the write", func() bool { return g.prescans.Load() > prescans })
							case "once stored":
								waitFor(t, "the judged bytes stored", func() bool { return m.fsys.stocked.Load() > stocked })
							}
							how.do(t, b, f)
							if got, err := readAs(t, m, reader, "cat "+f); err == nil || !strings.Contains(got, "Permission denied") {
								t.Fatalf("round %d: read after the infected bytes went in: %v, %q; want Permission denied", round, err, got)
							}
						}
					})
				}
			}
		})
	}
}

// TestUnmountDuringRefresh: the attribute refresh after a store (a stat
// through the mount, refreshAttr) is under way when the mount is
// unmounted: its request is held until the unmount has returned. The
// unmount must not hang, must leave nothing mounted on the target, and
// serving must end once the refresh is over.
func TestUnmountDuringRefresh(t *testing.T) {
	for _, watched := range []bool{true, false} {
		t.Run(fmt.Sprintf("watched=%v", watched), func(t *testing.T) {
			held := make(chan struct{})
			unheld := make(chan struct{})
			var once sync.Once
			mo := MountOptions{FS: Options{AttrValid: time.Second, EntryValid: time.Second,
				Invalidation: watched, WatchedValid: time.Hour}}
			// The refresh's GETATTR comes from a thread of this process
			// (clamfuse's own); hold the first.
			mo.observe = func(req fuse.Request) {
				if _, ok := req.(*fuse.GetattrRequest); !ok {
					return
				}
				if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", req.Hdr().Pid)); err != nil {
					return
				}
				once.Do(func() {
					close(held)
					<-unheld
				})
			}
			_, m, _ := testMountGate(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: 1 << 20})
			runOn(t, m, "sh", "-c", "printf 'judged, stored, refreshed' > "+filepath.Join(m.Target, "f"))
			select {
			case <-held:
			case <-time.After(time.Minute):
				t.Fatal("no refresh of the attributes after the store within a minute")
			}
			unmounted := make(chan error, 1)
			go func() { unmounted <- m.Unmount() }()
			select {
			case err := <-unmounted:
				if err != nil {
					t.Errorf("unmount while the refresh is under way: %v", err)
				}
			case <-time.After(30 * time.Second):
				close(unheld)
				t.Fatal("unmount hung while the refresh was under way")
			}
			if IsFuseMount(m.Target) {
				t.Errorf("%s still mounted after the unmount", m.Target)
			}
			close(unheld)
			if err := m.Wait(30 * time.Second); err != nil {
				abortMount(t, m.Target)
				t.Fatalf("serving after the unmount and the refresh: %v", err)
			}
			m.done <- nil // for the cleanup's Wait
		})
	}
}

// TestStockFlood: a user writes many small files through the mount at
// once; each is judged after its write and its judged bytes stored, with
// a refresh of its attributes queued to the watcher's notifier
// (refreshSoon, a timer each). Once the writes are over, every store and
// refresh ends: no goroutine, timer or queued refresh is left over.
func TestStockFlood(t *testing.T) {
	const files = 1000
	_, m, _ := testMountGate(t, MountOptions{Passthrough: true, FS: Options{AttrValid: time.Second, EntryValid: time.Second,
		Invalidation: true, WatchedValid: time.Hour}}, cache.Options{MaxEntries: 2 * files, TTL: time.Hour,
		Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	goroutines := runtime.NumGoroutine()
	stocked := m.fsys.stocked.Load()
	runOn(t, m, "sh", "-c", fmt.Sprintf(`cd %s && i=0; while [ $i -lt %d ]; do echo "flood $i" > f$i; i=$((i+1)); done`, m.Target, files))
	// Each file's store and refresh (stocked counts both), though some
	// may be skipped (a scan after the write dropped from a full queue,
	// a file judged by an open first): wait until none runs any more.
	last, still := m.fsys.stocked.Load(), 0
	waitFor(t, "the stores and refreshes over", func() bool {
		now := m.fsys.stocked.Load()
		if now != last {
			last, still = now, 0
			return false
		}
		still++
		return still > 200
	})
	t.Logf("%d of %d files stored and refreshed; goroutines %d, %d before", last-stocked, files, runtime.NumGoroutine(), goroutines)
	// Idle connections to clamd and the like may stay; not one per file.
	if extra := runtime.NumGoroutine() - goroutines; extra > 50 {
		t.Errorf("%d goroutines more than before the flood of %d files", extra, files)
	}
	if last-stocked < files/2 {
		t.Errorf("%d of %d files stored and refreshed; want most", last-stocked, files)
	}
	m.fsys.watch.qMu.Lock()
	queued := len(m.fsys.watch.refresh)
	m.fsys.watch.qMu.Unlock()
	if queued != 0 {
		t.Errorf("%d refreshes still queued after the flood", queued)
	}
}
