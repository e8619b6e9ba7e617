package cache_test

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/cache"
)

// TestWatchDir: adding, growing, touching and removing an entry, and the
// directory going away, are each one change; quiet polls are none.
func TestWatchDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var changes atomic.Int32
	cache.WatchDir(t.Context(), dir, 10*time.Millisecond, nil, func() { changes.Add(1) })
	// A step may be seen in more than one poll (a file created, then
	// written), so each step must bring at least one change, and quiet
	// polls none.
	var last int32
	expect := func(what string, _ int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for changes.Load() <= last {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no change seen", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		for {
			n := changes.Load()
			time.Sleep(50 * time.Millisecond) // several quiet polls
			if changes.Load() == n {
				last = n
				return
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := changes.Load(); n != 0 {
		t.Fatalf("nothing done: %d changes seen; want 0", n)
	}
	f := filepath.Join(dir, "extra.ndb")
	if err := os.WriteFile(f, []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("file added", 1)
	if err := os.WriteFile(f, []byte("a\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("file grown", 2)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(f, later, later); err != nil {
		t.Fatal(err)
	}
	expect("file touched", 3)
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	expect("file removed", 4)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	expect("directory removed", 5)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	expect("directory back", 6)
}
