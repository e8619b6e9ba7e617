package cache

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/clamav"
)

func TestPrefetchLen(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name       string
		size, room int64
		want       int64
	}{
		{"small file: left to the kernel's readahead", prefetchMin - 1, 16 * gib, 0},
		{"at the minimum", prefetchMin, 16 * gib, prefetchMin},
		{"whole file when the room holds it", gib, 16 * gib, gib},
		{"the room at most", 4 * gib, gib, gib},
		{"nothing when the room is below the minimum", gib, prefetchMin - 1, 0},
		{"no room", gib, 0, 0},
		{"less than none (free memory fell under what is read ahead)", gib, -gib, 0},
	}
	for _, tc := range tests {
		if got := prefetchLen(tc.size, tc.room); got != tc.want {
			t.Errorf("%s: prefetchLen(%d, %d) = %d, want %d", tc.name, tc.size, tc.room, got, tc.want)
		}
	}
}

// The files read ahead at once take half of the free memory at most,
// all together, and are prefetchMax at most.
func TestReserveAhead(t *testing.T) {
	const mib = 1 << 20
	for deadline := time.Now().Add(30 * time.Second); aheadFiles() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d files read ahead by earlier tests still", aheadFiles())
		}
	}
	free := int64(200 * mib) // room for 100 MiB
	a := reserveAhead(60*mib, free)
	b := reserveAhead(60*mib, free)
	c := reserveAhead(60*mib, free)
	if a != 60*mib || b != 40*mib || c != 0 {
		t.Errorf("three files of 60 MiB with 200 MiB free: %d, %d and %d MiB read ahead; want 60, 40 and 0", a>>20, b>>20, c>>20)
	}
	releaseAhead(a)
	if d := reserveAhead(60*mib, free); d != 60*mib {
		t.Errorf("once the first is done: %d MiB, want 60", d>>20)
	} else {
		releaseAhead(d)
	}
	releaseAhead(b)
	var got []int64
	for range prefetchMax + 1 {
		got = append(got, reserveAhead(prefetchMin, 1<<40))
	}
	for i, n := range got {
		want := int64(prefetchMin)
		if i == prefetchMax {
			want = 0 // prefetchMax read ahead already
		}
		if n != want {
			t.Errorf("file %d of %d: %d bytes read ahead, want %d", i+1, prefetchMax+1, n, want)
		}
		if n > 0 {
			releaseAhead(n)
		}
	}
	ahead.mu.Lock()
	defer ahead.mu.Unlock()
	if ahead.files != 0 || ahead.bytes != 0 {
		t.Errorf("after every release: %d files, %d bytes counted", ahead.files, ahead.bytes)
	}
}

// diskFile writes a file of size bytes where the page cache can drop
// it (not tmpfs), writes it back and drops it, so that none of it is
// in memory.
func diskFile(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type == unix.TMPFS_MAGIC {
		var err error
		if dir, err = os.MkdirTemp("/var/tmp", "clamfuse-prefetch-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	p := filepath.Join(dir, "big")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-off)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if in, _ := resident(t, p); in != 0 {
		t.Fatalf("%d pages of %s still in the page cache after POSIX_FADV_DONTNEED", in, p)
	}
	return p
}

// resident counts the pages of the file at p that are in the page cache.
func resident(t *testing.T, p string) (in, total int) {
	t.Helper()
	in, total, err := residentPages(p)
	if err != nil {
		t.Fatal(err)
	}
	return in, total
}

func residentPages(p string) (in, total int, err error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, 0, err
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, 0, errno
	}
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in, len(vec), nil
}

// waitResident waits until every page of p is in the page cache, or
// until d passed; it reports whether they all were.
func waitResident(p string, d time.Duration) bool {
	for deadline := time.Now().Add(d); ; {
		if in, total, err := residentPages(p); err != nil {
			return false
		} else if in == total {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openFDs counts the test's open descriptors, /dev/null's of prefetch
// opened first.
func openFDs(t *testing.T) int {
	t.Helper()
	nullFD()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func aheadFiles() int {
	ahead.mu.Lock()
	defer ahead.mu.Unlock()
	return ahead.files
}

// prefetchDone waits until no file is read ahead any more and the
// test's descriptors are fds again, or until d passed.
func prefetchDone(t *testing.T, fds int, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); aheadFiles() != 0 || openFDs(t) != fds; {
		if time.Now().After(deadline) {
			t.Fatalf("%d files still read ahead, %d descriptors open, %d before prefetch", aheadFiles(), openFDs(t), fds)
		}
		time.Sleep(time.Millisecond)
	}
}

// prefetch reads the whole file into the page cache, through a
// descriptor of its own: the one clamd would be handed keeps its offset,
// and once it is done no descriptor of prefetch's is left.
func TestPrefetchFillsPageCache(t *testing.T) {
	const size = 48 << 20
	p := diskFile(t, size)
	f := openFile(t, p)
	fds := openFDs(t)
	stop := prefetch(f, size)
	filled := waitResident(p, 30*time.Second)
	stop()
	if !filled {
		in, total := resident(t, p)
		t.Fatalf("%d of %d pages in the page cache after prefetch, want all", in, total)
	}
	if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != 0 {
		t.Errorf("offset of the scanned descriptor after prefetch: %d, %v; want 0", off, err)
	}
	prefetchDone(t, fds, 10*time.Second)
	stop() // a second stop is harmless
}

// stop ends the reading ahead, which then closes its descriptor; a file
// below prefetchMin is not read ahead.
func TestPrefetchStop(t *testing.T) {
	const size = 64 << 20
	p := diskFile(t, size)
	f := openFile(t, p)
	fds := openFDs(t)
	prefetch(f, size)() // stopped as soon as started
	prefetchDone(t, fds, 10*time.Second)
	prefetch(f, prefetchMin-1)
	if aheadFiles() != 0 || openFDs(t) != fds {
		t.Errorf("a file below prefetchMin is read ahead")
	}
}

// Past prefetchMax files read ahead at once (reads that stall), a scan
// reads nothing ahead and holds no descriptor more.
func TestPrefetchBounded(t *testing.T) {
	const size = 16 << 20
	p := diskFile(t, size)
	f := openFile(t, p)
	fds := openFDs(t)
	var held []int64
	for range prefetchMax {
		held = append(held, reserveAhead(prefetchMin, 1<<40))
	}
	stop := prefetch(f, size)
	n := openFDs(t)
	for _, h := range held {
		releaseAhead(h)
	}
	stop()
	if n != fds {
		t.Errorf("%d descriptors open with %d files read ahead already, %d before", n, prefetchMax, fds)
	}
	if in, _ := resident(t, p); in != 0 {
		t.Errorf("%d pages read ahead with %d files read ahead already, want none", in, prefetchMax)
	}
}

// residentScanner judges every file clean once all of it is in the page
// cache, as clamd would once it read it, without reading it itself: it
// records whether the pages came within its deadline.
type residentScanner struct {
	path   string
	filled chan bool
}

func (s *residentScanner) String() string { return "fake:clamd" }

func (s *residentScanner) ScanFile(ctx context.Context, f *os.File, size int64) (clamav.Result, error) {
	s.filled <- waitResident(s.path, 20*time.Second)
	return clamav.Result{}, nil
}

// The gate reads a file too large to be verified ahead of clamd while
// clamd scans it.
func TestGateReadsAhead(t *testing.T) {
	const size = 32 << 20
	p := diskFile(t, size)
	f := openFile(t, p)
	s := &residentScanner{path: p, filled: make(chan bool, 1)}
	g := NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: 1 << 20})
	checkDecision(t, "Check", g.Check(t.Context(), f, someone), expect{allow: true, reason: ReasonClean})
	select {
	case filled := <-s.filled:
		if !filled {
			in, total := resident(t, p)
			t.Errorf("%d of %d pages of the file in the page cache while clamd scanned it, want all (read ahead)", in, total)
		}
	default:
		t.Fatal("the file was not scanned")
	}
}
