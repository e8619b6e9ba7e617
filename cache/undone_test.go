package cache_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// flipScanner is a hostile user's timing made exact: they hold the file
// mapped shared (MAP_SHARED) with its page already dirty, so that no
// store into the mapping changes the file's times or size, and put clean
// bytes in just before clamd reads the file, and the infected ones back
// as soon as it has replied. (Without the hook, a loop flipping the bytes
// as fast as it can wins the same race now and then, and may try as
// often as it likes with opens of its own.)
type flipScanner struct {
	cache.Scanner
	mu          sync.Mutex
	on          bool
	mem         []byte
	clean, evil []byte
}

func (s *flipScanner) ScanFile(ctx context.Context, f *os.File, size int64) (clamav.Result, error) {
	s.mu.Lock()
	on := s.on
	s.mu.Unlock()
	if on {
		copy(s.mem, s.clean)
		defer copy(s.mem, s.evil)
	}
	return s.Scanner.ScanFile(ctx, f, size)
}

// holdAll is a cache.Holder that keeps every buffer it gives.
type holdAll struct{ bufs [][]byte }

func (h *holdAll) Hold(size int64) []byte {
	b := make([]byte, size)
	h.bufs = append(h.bufs, b)
	return b
}

// TestGateUndoneUnderScan: infected bytes are in a file whose contents
// the gate verifies, and a hostile user swaps clean ones in only while
// clamd reads it, through a shared mapping (no trace in the file's size
// or times). The digest of the contents before the scan and after it
// agree, both of the infected bytes; what clamd judged was not those.
// No open may be allowed on that scan's verdict as if it judged the
// infected bytes: not the open whose scan it was, not a later one from
// the cache, and no buffer handed over for the page cache (Decision.Held)
// may hold the infected bytes.
func TestGateUndoneUnderScan(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	eicar := clamdtest.EICAR()
	clean := bytes.Repeat([]byte("c"), len(eicar))
	// On a tmpfs of the test's own, whose pages are never cleaned: the
	// stores into the mapping never change the file's times (on a disk,
	// writeback may clean the page between them and the next store
	// faults, which updates the times).
	dir := ownTmpfs(t)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, clean, 0o666); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, len(eicar), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	copy(mem, eicar) // the page is dirty from now on
	s := &flipScanner{Scanner: realPool(t, c), mem: mem, clean: clean, evil: eicar}
	g := verifyingGate(s)

	var before unix.Stat_t
	if err := unix.Stat(p, &before); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.on = true
	s.mu.Unlock()
	h := &holdAll{}
	who := cache.Opener{Path: "f", Pid: 4242, Uid: 1000, Into: h}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := g.Check(t.Context(), f, who)
	s.mu.Lock()
	s.on = false
	s.mu.Unlock()
	var after unix.Stat_t
	if err := unix.Stat(p, &after); err != nil {
		t.Fatal(err)
	}
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim {
		t.Fatalf("the stores into the mapping changed the file's times on a tmpfs: %v %v -> %v %v", before.Mtim, before.Ctim, after.Mtim, after.Ctim)
	}
	if !bytes.Equal(mem, eicar) {
		t.Fatal("the file does not hold the infected bytes after the scan")
	}
	if d.Held {
		for _, b := range h.bufs {
			if bytes.Equal(b, eicar) {
				t.Errorf("the buffer handed over for the page cache holds the infected bytes (%s)", d.Reason)
			}
		}
	}
	if d.Allow {
		t.Errorf("the open whose scan clamd was fooled in: %s, allowed; want denied: the file held the infected bytes before and after", d.Reason)
	}
	f2, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if d := g.Check(t.Context(), f2, cache.Opener{Path: "f", Pid: 4243, Uid: 1001}); d.Allow {
		t.Fatalf("the next open of the infected file: %s (cached %v), allowed; want denied", d.Reason, d.Cached)
	}
}
