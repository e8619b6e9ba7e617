package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/cache"
)

// BenchmarkSmallOpenRoundTrips (issue #12) counts the FUSE requests of
// the small-file rows of the bench, per file: the first open of 300
// files of 16 KiB (the kernel's caches dropped), a cached re-open, and
// the first open right after each was written through the mount, then
// the cached open after that. The mount is set as clamfuse's defaults
// set it (invalidation, passthrough when granted, contents verified up
// to 1 MiB). Each file is read by cat, one process for all. It reports
// requests per file, and logs each request type and the gate's counters
// (-v). A measurement, not a test.
//
//	go test -run - -bench SmallOpenRoundTrips -benchtime 1x -v ./fs/
func BenchmarkSmallOpenRoundTrips(b *testing.B) {
	const files, size = 300, 16 << 10
	counting := &countingGate{}
	backing, m, seen := testMountGate(b, MountOptions{Passthrough: true, FS: Options{Gate: counting,
		AttrValid: time.Second, EntryValid: time.Second, Invalidation: true, WatchedValid: time.Hour}},
		cache.Options{MaxEntries: 10000, TTL: time.Hour, Timeout: time.Minute, MaxConcurrent: 4, VerifyMaxSize: 1 << 20})
	gate := counting.Gate.(*cache.Gate)
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.Mkdir(filepath.Join(backing, "small"), 0o755); err != nil {
		b.Fatal(err)
	}
	var names []string
	for i := range files {
		copy(data, fmt.Sprintf("file %d\n", i))
		if err := os.WriteFile(filepath.Join(backing, "small", fmt.Sprintf("f%04d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
		names = append(names, fmt.Sprintf("f%04d", i))
	}
	b.Logf("passthrough granted: %v", m.Passthrough())
	step := func(name, script string) {
		b.Helper()
		seen.takeOps()
		before := gate.Stats()
		runAs(b, m, 0, script)
		ops := seen.takeOps()
		after := gate.Stats()
		b.Logf("%s: %v; gate: %d hits, %d misses, %d scans, %d changed, %d racy", name, ops,
			after.Hits-before.Hits, after.Misses-before.Misses, after.Scans-before.Scans,
			after.Changed-before.Changed, after.Racy-before.Racy)
		b.ReportMetric(float64(total(ops))/files, "req/file-"+name)
	}
	for range b.N {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			b.Fatalf("drop_caches: %v", err)
		}
		cat := "cd " + filepath.Join(m.Target, "small") + " && cat " + strings.Join(names, " ") + " >/dev/null"
		step("first", cat)
		step("cached", cat)
		step("cached-again", cat)
		step("stat", "cd "+filepath.Join(m.Target, "small")+" && stat "+strings.Join(names, " ")+" >/dev/null")

		dir := filepath.Join(m.Target, "written")
		runAs(b, m, 0, "rm -rf "+dir+" && mkdir "+dir)
		// One process writes them all, as the bench's writer does.
		var w strings.Builder
		fmt.Fprintf(&w, "cd %s && for f in %s; do head -c %d %s/$f > $f; done", dir, strings.Join(names, " "), size, filepath.Join(backing, "small"))
		scans, stocked := gate.Stats().Scans, m.fsys.stocked.Load()
		step("write", w.String())
		deadline := time.Now().Add(time.Minute)
		for gate.Stats().Scans < scans+files && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // a measurement: polls the gate for the scans after write
		}
		// And for the stores of their judged bytes (stock.go), until
		// all are made or none was for a while (a node the kernel
		// forgot meanwhile, when something drops its caches, gets none).
		for last, still := m.fsys.stocked.Load(), 0; last < stocked+files && still < 20 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			if now := m.fsys.stocked.Load(); now != last {
				last, still = now, 0
			} else {
				still++
			}
		}
		b.Logf("judged bytes stored after the write: %d of %d files", m.fsys.stocked.Load()-stocked, files)
		cat = "cd " + dir + " && cat " + strings.Join(names, " ") + " >/dev/null"
		step("after-write", cat)
		step("after-write-cached", cat)
	}
}

// BenchmarkCachedOpenAllocs (issue #12) counts what the serving process
// allocates per cached re-open of a 16 KiB file (page cache kept, contents
// verified, passthrough granted or not), as cat makes them: OPEN and
// RELEASE, and whatever else the mount does meanwhile. The test's request
// observer adds about two allocations per open (it formats each request's
// type). A measurement, not a test.
//
//	go test -run - -bench CachedOpenAllocs -benchtime 20x ./fs/
func BenchmarkCachedOpenAllocs(b *testing.B) {
	const files, size = 300, 16 << 10
	backing, m, _ := testMountGate(b, MountOptions{Passthrough: true, FS: Options{
		AttrValid: time.Second, EntryValid: time.Second, Invalidation: true, WatchedValid: time.Hour}},
		cache.Options{MaxEntries: 10000, TTL: time.Hour, Timeout: time.Minute, MaxConcurrent: 4, VerifyMaxSize: 1 << 20})
	data := make([]byte, size)
	var names []string
	for i := range files {
		copy(data, fmt.Sprintf("file %d\n", i))
		names = append(names, fmt.Sprintf("f%04d", i))
		if err := os.WriteFile(filepath.Join(backing, names[i]), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	cat := "cd " + m.Target + " && cat " + strings.Join(names, " ") + " >/dev/null"
	for range 3 { // judged, then the page cache kept
		runAs(b, m, 0, cat)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		runAs(b, m, 0, cat)
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(files*b.N), "allocs/open")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(files*b.N), "B/open")
}

// TestCloseSendsFlushOnce: Handle.Flush answers ENOSYS, after which the
// kernel sends no FLUSH on any close of the mount (fc->no_flush): at most
// the first close of the mount makes one, and a read-only close never
// waits for clamfuse. POSIX and flock locks stay the kernel's own (the
// mount asks for neither FUSE_POSIX_LOCKS nor FUSE_FLOCK_LOCKS), so
// no lock owner needs the FLUSH: the kernel drops a process's record
// locks at any close of the file itself (TestPosixCompare's fcntl-locks
// case checks that against a native directory).
func TestCloseSendsFlushOnce(t *testing.T) {
	backing, m, seen := testMount(t, MountOptions{})
	var names []string
	for i := range 5 {
		name := fmt.Sprintf("f%d", i)
		if err := os.WriteFile(filepath.Join(backing, name), []byte("clean "+name), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	cat := "cd " + m.Target + " && cat " + strings.Join(names, " ") + " >/dev/null"
	seen.takeOps()
	runAs(t, m, 0, cat)
	first := seen.takeOps()
	runAs(t, m, 0, cat)
	runAs(t, m, 0, "cd "+m.Target+" && echo more >> f0")
	again := seen.takeOps()
	if first["OpenRequest"] != len(names) || first["FlushRequest"] > 1 {
		t.Errorf("first opens and closes: %v; want %d OPEN, at most one FLUSH", first, len(names))
	}
	if again["FlushRequest"] != 0 {
		t.Errorf("later closes, for reading and for writing: %v; want no FLUSH", again)
	}
}
