package fuse

// clamfuse: the buffers requests are read into (block "read buffer" of
// ReadRequest and "put message" of putMessage).

import (
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

// readMessage reads the next request from the kernel into a message of
// its own: a small one if it fits, else a big one.
func (c *Conn) readMessage() (m *message, n int, err error) {
	m = getMessage(c)
	c.rio.RLock()
	n, err = syscall.Read(c.fd(), m.buf)
	c.rio.RUnlock()
	if err != nil || n <= 0 || n > smallSize {
		return m, n, err
	}
	s := smallPool.Get().(*message)
	s.conn = c
	copy(s.buf, m.buf[:n])
	putMessage(m)
	return s, n, nil
}

// putSized returns m to the pool of its size.
func putSized(m *message) {
	m.buf = m.buf[:cap(m.buf)]
	m.conn = nil
	m.off = 0
	if cap(m.buf) == smallSize {
		smallPool.Put(m)
		return
	}
	reqPool.Put(m)
}
