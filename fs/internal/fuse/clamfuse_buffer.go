package fuse

// clamfuse: the buffers requests are read into (block "read buffer" of
// ReadRequest and "put message" of putMessage).

import (
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// The kernel refuses a read of /dev/fuse into a buffer that cannot hold
// the largest WRITE it may send (max_write and the headers), so every read
// is into a message of bufSize (a little over maxWrite, 1 MiB). Most
// requests are far smaller, and a request may be held for long (an OPEN
// waiting for its scan): one that fits in smallSize is copied into a
// message of that size, and the big one goes back to the pool at once.
// So big buffers are held only by the readers waiting in read(2) and by
// the WRITE (and large SETXATTR) requests being served, not by every
// request in flight.
const smallSize = 4096

// smallPool is the pool of small messages, as reqPool is of big ones;
// the same rules hold (see reqPool).
var smallPool = sync.Pool{
	New: func() interface{} {
		m := &message{buf: make([]byte, smallSize)}
		m.hdr = (*inHeader)(unsafe.Pointer(&m.buf[0]))
		return m
	},
}

// Big messages live outside the Go heap, in memory mapped for each
// (bigPool). In the heap, each was a 1 MiB allocation that the garbage
// collector counted as live while pooled and zeroed (touched, made
// resident) whenever the pool had lost it at a collection and it was
// allocated again; and every live byte lets the heap grow by one more
// before the next collection. Mapped, a big message costs only the
// pages the kernel writes into: one for the small requests most reads
// turn out to be, all of them only for a big WRITE. Once bigHot messages
// are resident, a big message that held a big request gives its pages
// back (MADV_DONTNEED) when it returns to the pool, so what stays
// resident after a burst of writes is bounded too. A message is never
// unmapped: a caller that kept a slice of a request past its Respond
// (the upstream rule forbids it) reads stale bytes, as with the pool,
// rather than faulting; and the number of messages mapped is bounded by
// the requests ever in flight at once.
const bigHot = 4

// bigPool is the pool of big messages.
var bigPool struct {
	mu       sync.Mutex
	free     []*message        // LIFO: the most recently used, likely resident, first
	mapped   map[*message]bool // every message mapped; true if its pages may be resident beyond the first
	resident int               // messages marked true in mapped
}

// getBig returns a big message for c: from the pool, newly mapped, or
// (if mapping fails) from the Go heap as upstream does.
func getBig(c *Conn) *message {
	bigPool.mu.Lock()
	var m *message
	if k := len(bigPool.free); k > 0 {
		m = bigPool.free[k-1]
		bigPool.free[k-1] = nil
		bigPool.free = bigPool.free[:k-1]
	}
	bigPool.mu.Unlock()
	if m == nil {
		m = mapBig()
	}
	m.conn = c
	return m
}

// mapBig maps a new big message, or allocates one in the heap if it
// cannot.
func mapBig() *message {
	buf, err := syscall.Mmap(-1, 0, bufSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return getMessage(nil)
	}
	m := &message{buf: buf}
	m.hdr = (*inHeader)(unsafe.Pointer(&m.buf[0]))
	bigPool.mu.Lock()
	if bigPool.mapped == nil {
		bigPool.mapped = map[*message]bool{}
	}
	bigPool.mapped[m] = false
	bigPool.mu.Unlock()
	return m
}

// putBig returns the big message m, whose first used bytes were written
// (its request's length), to the pool it came from, and reports whether
// it was a mapped one.
func putBig(m *message, used int) bool {
	page := os.Getpagesize()
	bigPool.mu.Lock()
	defer bigPool.mu.Unlock()
	res, ok := bigPool.mapped[m]
	if !ok {
		return false
	}
	if used > page && !res {
		if bigPool.resident < bigHot {
			bigPool.mapped[m] = true
			bigPool.resident++
		} else {
			// Keep the first page: it is written by every request.
			_ = syscall.Madvise(m.buf[page:], syscall.MADV_DONTNEED)
		}
	}
	bigPool.free = append(bigPool.free, m)
	return true
}

// readMessage reads the next request from the kernel into a message of
// its own: a small one if it fits, else a big one.
func (c *Conn) readMessage() (m *message, n int, err error) {
	m = getBig(c)
	c.rio.RLock()
	n, err = syscall.Read(c.fd(), m.buf)
	c.rio.RUnlock()
	if err != nil || n <= 0 {
		m.buf = m.buf[:0] // nothing written (see putSized)
		return m, n, err
	}
	if n > smallSize {
		return m, n, err
	}
	s := smallPool.Get().(*message)
	s.conn = c
	copy(s.buf, m.buf[:n])
	m.buf = m.buf[:n]
	putMessage(m)
	return s, n, nil
}

// putSized returns m to the pool of its size.
// Until then m.buf is as long as the request read into it (ReadRequest
// and readMessage cut it so).
func putSized(m *message) {
	used := len(m.buf)
	m.buf = m.buf[:cap(m.buf)]
	m.conn = nil
	m.off = 0
	if cap(m.buf) == smallSize {
		smallPool.Put(m)
		return
	}
	if putBig(m, used) {
		return
	}
	reqPool.Put(m)
}
