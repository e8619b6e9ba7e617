package fuse

// clamfuse: READ replies sent without a copy of the data, in buffers
// used again.

import (
	"sync"
	"unsafe"
)

// ResponseData returns the slice a handler may read the data of a reply
// to r into: empty, with room for r.Size bytes, inside the buffer of the
// reply itself, after the room for its header. When the ReadResponse's
// Data still starts there, Respond sends that buffer as is, instead of
// allocating another one and copying the data into it. The buffer comes
// from readBufs and goes back there once Respond has written the reply
// (the handler must not keep Data, as it must not keep any part of a
// request after its Respond).
func (r *ReadRequest) ResponseData() []byte {
	r.out, r.pooled = getReadBuf(r.Size)
	return r.out[len(r.out):len(r.out)]
}

// inPlace returns the reply to r with data as its contents when data
// starts where ResponseData left room for it, else nil.
func (r *ReadRequest) inPlace(data []byte) buffer {
	out := r.out
	r.out = nil
	h := len(out)
	if len(data) == 0 || h+len(data) > cap(out) || &out[:h+1][h] != &data[0] {
		return nil
	}
	return out[:h+len(data)]
}

// recycle gives the buffer ResponseData took back to readBufs, once
// nothing refers to it any more: after the reply was written.
func (r *ReadRequest) recycle() {
	if p := r.pooled; p != nil {
		r.pooled = nil
		putReadBuf(p)
	}
}

// readBufs are the buffers of READ replies, by size class: class k holds
// buffers with room for a reply header and 4 KiB << k bytes of data. A
// READ is at most max_read (1 MiB, 256 pages); the kernel asks for whole
// pages, mostly of the sizes its readahead makes. Without them each READ
// of a small file (every first open of one: small files are not in
// passthrough) allocated its size afresh, the most of clamfuse's
// allocations per first open of a 16 KiB file (about 60% of the bytes),
// and so of its garbage collections. A buffer in a pool holds bytes of
// an earlier reply; a reply sends only its header, zeroed, and the bytes
// its handler read into it.
var readBufs [readClasses]sync.Pool

const (
	readClasses  = 9
	readClassMin = 4 << 10
)

const outHeaderSize = unsafe.Sizeof(outHeader{})

// getReadBuf returns a reply buffer with room for size bytes after the
// header (its length), and the pooled buffer it is, or nil when size is
// over every class.
func getReadBuf(size int) (buffer, *buffer) {
	k := 0
	for k < readClasses && size > readClassMin<<k {
		k++
	}
	if k == readClasses || size < 0 {
		return newBuffer(uintptr(max(size, 0))), nil
	}
	p, _ := readBufs[k].Get().(*buffer)
	if p == nil {
		b := newBuffer(uintptr(readClassMin << k))
		p = &b
	}
	b := (*p)[:outHeaderSize]
	clear(b)
	return b, p
}

// putReadBuf puts p, from getReadBuf, back in its pool.
func putReadBuf(p *buffer) {
	n := cap(*p) - int(outHeaderSize)
	for k := range readClasses {
		if n == readClassMin<<k {
			readBufs[k].Put(p)
			return
		}
	}
}
