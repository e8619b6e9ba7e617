package cache

import (
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Prefetch: the page cache filled ahead of clamd, on another CPU.
//
// clamd scans a file on one thread and reads it as it goes, so filling
// the page cache (allocating its pages, sending the reads, waiting for
// the disk) is done on that thread, between its own work. While it
// scans a file too large for its contents to be verified (the smaller
// ones are read whole for their digest before clamd sees them, the
// kernel told beforehand: lead), a goroutine of the gate reads the file
// ahead of it, so that clamd finds the pages there.
//
// It reads through a descriptor of its own (the kernel keeps the state
// of its readahead per open file, and clamd's, shared with the
// descriptor passed to it, must stay clamd's), into /dev/null with
// sendfile: the kernel's sequential readahead fills the page cache, in
// large folios, and nothing is copied into clamfuse. (POSIX_FADV_WILLNEED
// fills it in single pages, which clamd and every reader after it then
// read more slowly, and was no faster.) Nothing read ahead is judged or
// served any other way than before: it is only in the page cache sooner.
//
// The pages are the page cache's, which gives them back under pressure;
// so that those read ahead are not given back before clamd reads them,
// and so that no user's large files take the page cache of everyone
// else's, the files read ahead at once take at most half of the memory
// free when each starts, all of them together (the rest of a file is
// left to the readahead at clamd's pace). Reading ahead stops when the
// scan ends, after the chunk under way; the scan does not wait for it
// (a read of a filesystem that stalls must not hold an open past its
// deadline), and at most prefetchMax files are read ahead at once, so
// that reads that stall cannot pile up descriptors and goroutines: past
// it a scan reads nothing ahead.

const (
	// prefetchMin is the smallest file read ahead: below it the
	// readahead of clamd's first reads covers it.
	prefetchMin = 4 << 20
	// prefetchChunk is the span of one sendfile; the stop is looked at
	// between two.
	prefetchChunk = 8 << 20
	// prefetchMax bounds the files read ahead at once.
	prefetchMax = 8
)

// ahead is what is being read ahead.
var ahead struct {
	mu    sync.Mutex
	files int   // files being read ahead
	bytes int64 // how much of them, in all
}

// reserveAhead decides how much of a file of size bytes to read ahead,
// with free bytes of memory free, and counts it in ahead; 0 for none.
func reserveAhead(size, free int64) int64 {
	ahead.mu.Lock()
	defer ahead.mu.Unlock()
	if ahead.files >= prefetchMax {
		return 0
	}
	n := prefetchLen(size, free/2-ahead.bytes)
	if n > 0 {
		ahead.files++
		ahead.bytes += n
	}
	return n
}

// releaseAhead ends what reserveAhead counted.
func releaseAhead(n int64) {
	ahead.mu.Lock()
	ahead.files--
	ahead.bytes -= n
	ahead.mu.Unlock()
}

var devNull struct {
	once sync.Once
	fd   int
}

// prefetch starts reading the first bytes of f (reserveAhead says how
// many) into the page cache on its own goroutine, through a descriptor
// of its own; stop ends it after the read under way, without waiting
// for it. f must stay open until prefetch returns.
func prefetch(f *os.File, size int64) (stop func()) {
	none := func() {}
	null := nullFD()
	if null < 0 || size < prefetchMin {
		return none
	}
	n := reserveAhead(size, freeMemory())
	if n == 0 {
		return none
	}
	fd, err := openAgain(f) // gate.go
	if err != nil {
		releaseAhead(n)
		return none
	}
	var stopped atomic.Bool
	go func() {
		defer releaseAhead(n)
		defer unix.Close(fd)
		for off := int64(0); off < n && !stopped.Load(); {
			w, err := unix.Sendfile(null, fd, &off, int(min(prefetchChunk, n-off)))
			if err != nil || w == 0 {
				return
			}
		}
	}()
	return func() { stopped.Store(true) }
}

// nullFD is a descriptor of /dev/null open for writing, opened at the
// first call and kept (-1 if it cannot be opened).
func nullFD() int {
	devNull.once.Do(func() {
		var err error
		if devNull.fd, err = unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0); err != nil {
			devNull.fd = -1
		}
	})
	return devNull.fd
}

// prefetchLen is how much of a file of size bytes is read ahead with
// room bytes of memory for it: none below prefetchMin, at most room.
func prefetchLen(size, room int64) int64 {
	if size < prefetchMin {
		return 0
	}
	n := min(size, room)
	if n < prefetchMin {
		return 0
	}
	return n
}

// freeMemory is the memory free now, in bytes (0 if unknown).
func freeMemory() int64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return int64(si.Freeram) * int64(si.Unit)
}
