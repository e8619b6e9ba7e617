package cache

import (
	"runtime"
	"syscall"
	"unsafe"
)

// Off-heap storage of the LRU (issue #12: 100 000 files opened once in
// at most 48 MiB of resident memory).
//
// The LRU's nodes and slots hold no pointers, and with 100 000 verdicts
// they are some 10 MB. In the Go heap they counted as live data, and the
// garbage collector lets the heap grow by as much again as it found live
// before it collects (GOGC=100), and keeps that much memory mapped: each
// byte of the cache cost about two of resident memory. Mapped outside the
// heap they cost what they hold, and the pages are given back to the
// system when the cache is purged or collected. They are reached only with
// LRU.mu held, and unmapped only with LRU.mu held (reset) or once the LRU
// is unreachable (its cleanup), so no reference outlives the mapping.
// Where mapping fails, they are ordinary heap slices.

// chunkNodes is the number of nodes in a chunk: 1024 nodes of 88 bytes
// are 22 pages of 4 KiB.
const (
	chunkShift = 10
	chunkNodes = 1 << chunkShift
)

// lruMem is the memory an LRU maps: the nodes in chunks that never move
// (growing copies nothing) and the table of slots.
type lruMem struct {
	chunks      [][]node
	chunkMapped []bool
	slots       []int32
	slotsMapped bool
}

// at returns node i, which is allocated.
func (m *lruMem) at(i int32) *node {
	return &m.chunks[i>>chunkShift][i&(chunkNodes-1)]
}

// cap is the number of nodes the chunks hold.
func (m *lruMem) cap() int { return len(m.chunks) * chunkNodes }

// addChunk adds a chunk of zero nodes.
func (m *lruMem) addChunk() {
	c, mapped := mapSlice[node](chunkNodes)
	m.chunks = append(m.chunks, c)
	m.chunkMapped = append(m.chunkMapped, mapped)
}

// setSlots replaces the table of slots with a zero one of n slots.
func (m *lruMem) setSlots(n int) {
	old, oldMapped := m.slots, m.slotsMapped
	m.slots, m.slotsMapped = mapSlice[int32](n)
	if oldMapped {
		unmapSlice(old)
	}
}

// mappedBytes is the memory mapped outside the heap.
func (m *lruMem) mappedBytes() int {
	n := 0
	for i, c := range m.chunks {
		if m.chunkMapped[i] {
			n += len(c) * int(unsafe.Sizeof(node{}))
		}
	}
	if m.slotsMapped {
		n += 4 * len(m.slots)
	}
	return n
}

// free gives the memory back; m is then empty.
func (m *lruMem) free() {
	for i, c := range m.chunks {
		if m.chunkMapped[i] {
			unmapSlice(c)
		}
	}
	if m.slotsMapped {
		unmapSlice(m.slots)
	}
	*m = lruMem{}
}

// lruMemCleanup frees the memory of an LRU the program no longer
// reaches. Its memory is behind a pointer of its own (LRU.mem), which
// nothing else holds.
func lruMemCleanup(m *lruMem) { m.free() }

// trackMem arranges for c's memory to be freed when c is collected.
func trackMem(c *LRU) {
	runtime.AddCleanup(c, lruMemCleanup, c.mem)
}

// mapSlice returns n zero Ts outside the Go heap, and true; or, if the
// memory cannot be mapped, in the heap, and false. T holds no pointers.
func mapSlice[T any](n int) ([]T, bool) {
	var zero T
	size := n * int(unsafe.Sizeof(zero))
	if n == 0 || size == 0 {
		return make([]T, n), false
	}
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return make([]T, n), false
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n), true
}

// unmapSlice unmaps s, which mapSlice mapped.
func unmapSlice[T any](s []T) {
	if len(s) == 0 {
		return
	}
	var zero T
	b := unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(zero)))
	_ = syscall.Munmap(b)
}
