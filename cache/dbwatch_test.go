package cache

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestWatchDir: adding, growing, touching and removing an entry, and the
// directory going away, are each one change; quiet polls are none.
func TestWatchDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var changes, polls atomic.Int32
	hook := func() { polls.Add(1) }
	watchPolled.Store(&hook)
	t.Cleanup(func() { watchPolled.Store(nil) })
	WatchDir(t.Context(), dir, 10*time.Millisecond, nil, func() { changes.Add(1) })
	// waitPolls waits until n more looks have been taken.
	waitPolls := func(n int32) {
		t.Helper()
		target := polls.Load() + n
		deadline := time.Now().Add(10 * time.Second)
		for polls.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("WatchDir took %d looks in 10s; want %d more", polls.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// A step may be seen in more than one look (a file created, then
	// written), so each step must bring at least one change, and further
	// looks none. The second look that ends after the step started after
	// it, so it saw the step whole.
	var last int32
	expect := func(what string) {
		t.Helper()
		waitPolls(2)
		n := changes.Load()
		if n <= last {
			t.Fatalf("%s: no change seen", what)
		}
		waitPolls(3)
		if m := changes.Load(); m != n {
			t.Fatalf("%s: %d more changes in quiet looks; want none", what, m-n)
		}
		last = n
	}
	waitPolls(3)
	if n := changes.Load(); n != 0 {
		t.Fatalf("nothing done: %d changes seen; want 0", n)
	}
	f := filepath.Join(dir, "extra.ndb")
	if err := os.WriteFile(f, []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("file added")
	if err := os.WriteFile(f, []byte("a\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("file grown")
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(f, later, later); err != nil {
		t.Fatal(err)
	}
	expect("file touched")
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	expect("file removed")
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	expect("directory removed")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	expect("directory back")
}
