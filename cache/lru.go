package cache

import (
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"time"
)

// Lock order: LRU.mu is a leaf.

// Key identifies one state of one file under one signature database. Any
// change of content (size, mtime), of metadata (ctime, which the kernel
// updates on every write, chmod, rename or utimes and which nobody can set
// back), or of identity (device, inode) gives a different key, and so does
// any change made through the mount (Writes), whatever the file's times
// say, so a verdict never outlives the bytes it judged. Changes the times
// cannot show (racy timestamps, writes through shared mappings outside the
// mount) are the Gate's to catch: see racy.go and verify.go.
type Key struct {
	Dev     uint64
	Ino     uint64
	Size    int64
	MtimeNs int64
	CtimeNs int64
	DB      string // signature database version the verdict was made with
	Gen     uint64 // the Gate's generation (see Gate.Invalidate)
	Writes  uint64 // the generations of the file's slots (see Gate.Modified); a verdict matches a Key whose Writes are the same by sameWrites
}

// Verdict is what clamd said of one file state.
type Verdict struct {
	Infected  bool
	Signature string // set iff Infected
	Backend   string // which clamd judged it
	// SHA256 is, when Infected, the SHA-256 digest (lower-case hex) of
	// the bytes judged, for scan.allow_sha256 and the log (allow.go).
	SHA256 string
}

// Memory layout (issue #3: 100 000 verdicts in well under 48 MiB).
//
// An LRU holds its entries in one slice of fixed-size nodes without
// pointers, so the garbage collector never scans it. A node keeps the
// integer fields of its Key, the database version and the verdict as ids
// into intern tables (there are a handful of database versions, backends
// and signatures, whatever the number of files), the digest of the
// contents judged (verify.go), the expiry as nanoseconds, and its
// neighbours in the recency list as indexes: 88 bytes. An open
// addressing table of node indexes finds a node by key; it stores each
// key once, in the node. Removed nodes are chained into a free list and
// reused. Nothing is allocated ahead of use: the nodes grow by chunks of
// 1024 with the number of entries, the table by doubling, and Purge gives
// their memory back. Both live outside the Go heap (offheap.go, issue #12):
// in it, each byte cost about two of resident memory.

// fileKey is a Key without its database version.
type fileKey struct {
	dev, ino           uint64
	size, mtime, ctime int64
	gen, writes        uint64
}

// sameState reports whether a and b are of the same file state: all
// their fields but writes are equal.
func sameState(a, b *fileKey) bool {
	x := *a
	x.writes = b.writes
	return x == *b
}

func fileKeyOf(k *Key) fileKey {
	return fileKey{dev: k.Dev, ino: k.Ino, size: k.Size, mtime: k.MtimeNs, ctime: k.CtimeNs, gen: k.Gen, writes: k.Writes}
}

// hashKey is what a key hashes as: the database version by its id. It has
// no padding, so it hashes as one block of memory.
type hashKey struct {
	fileKey
	db uint64
}

// node is one cached verdict, or a free slot of LRU.nodes.
type node struct {
	key     fileKey
	sum     uint64 // digest of the contents judged, 0 for none (see PutSum)
	expires int64  // nanoseconds since LRU.epoch; see LRU.expired
	db      uint32 // id of Key.DB in LRU.dbs
	verdict uint32 // id of the Verdict in LRU.verdicts
	prev    int32  // more recently used node, or nilNode
	next    int32  // less recently used node, or nilNode; the next free node if free
}

const (
	nilNode = -1

	// maxNodes bounds node indexes to int32 and table slots to int32.
	maxNodes = 1 << 30

	// The table of slots grows by doubling before more than 3/4 of it
	// is used, and starts small.
	minSlots = 8
)

// LRU is a bounded map of verdicts with a time to live. It is safe for
// concurrent use.
type LRU struct {
	max  int
	ttl  time.Duration
	now  func() time.Time
	seed maphash.Seed

	// mu guards every field below. It is a leaf: nothing else is locked
	// while it is held.
	mu       sync.Mutex
	mem      *lruMem // the nodes, entries and free ones, and the slots (offheap.go)
	nodes    int     // nodes allocated, free ones included; never shrinks but in Purge
	head     int32   // most recently used node, or nilNode
	tail     int32   // least recently used node, or nilNode
	free     int32   // first free node, or nilNode
	count    int     // entries, expired ones included until touched
	dbs      interner[string]
	verdicts interner[Verdict]
	epoch    time.Time // the origin of node.expires, set by the first Put with a TTL
	started  bool      // epoch is set
	evict    uint64
	mods     uint64 // changes of the entries: puts and removals
}

// NewLRU returns a cache of at most max entries, each valid for ttl.
// A ttl of zero or less never expires. max is at least 1, and at most
// 1<<30.
func NewLRU(max int, ttl time.Duration) *LRU {
	if max < 1 {
		max = 1
	}
	if max > maxNodes {
		max = maxNodes
	}
	c := &LRU{max: max, ttl: ttl, now: time.Now, seed: maphash.MakeSeed()}
	c.reset()
	return c
}

// reset empties the cache and lets go of its memory.
func (c *LRU) reset() {
	if c.mem == nil {
		c.mem = &lruMem{}
		trackMem(c)
	} else {
		c.mem.free()
	}
	c.nodes = 0
	c.head, c.tail, c.free = nilNode, nilNode, nilNode
	c.count = 0
	c.mods++
	c.dbs = interner[string]{clone: strings.Clone}
	c.verdicts = interner[Verdict]{clone: cloneVerdict}
}

// Get returns the verdict for k if one is cached and not expired.
func (c *LRU) Get(k Key) (Verdict, bool) {
	v, _, ok := c.GetSum(k)
	return v, ok
}

// GetSum is Get, and also returns the digest of the contents stored with
// the verdict (0 for none).
func (c *LRU) GetSum(k Key) (Verdict, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	db, ok := c.dbs.lookup(k.DB)
	if !ok {
		return Verdict{}, 0, false
	}
	fk := fileKeyOf(&k)
	slot, i := c.find(&fk, db)
	if i == nilNode {
		return Verdict{}, 0, false
	}
	n := c.mem.at(i)
	if c.expired(n) {
		c.remove(slot, i)
		return Verdict{}, 0, false
	}
	if !sameWrites(n.key.writes, fk.writes) {
		// The file was changed through the mount since: the verdict
		// of a scan of it that follows replaces this one.
		return Verdict{}, 0, false
	}
	c.toFront(i)
	return c.verdicts.value(n.verdict), n.sum, true
}

// Put stores v for k, evicting the least recently used entry when full.
func (c *LRU) Put(k Key, v Verdict) { c.PutSum(k, v, 0) }

// PutSum is Put with a digest of the contents v judged (0 for none),
// which GetSum returns with v; it replaces the digest of an entry
// already there.
func (c *LRU) PutSum(k Key, v Verdict, sum uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.put(k, v, sum, c.expiry())
}

// carry moves the verdict cached for from, if any (and not expired),
// to to, with its digest and its expiry, and reports whether there was
// one. from and to differ in their times alone: one file whose
// metadata changed (carry.go).
func (c *LRU) carry(from, to Key) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	db, ok := c.dbs.lookup(from.DB)
	if !ok {
		return false
	}
	fk := fileKeyOf(&from)
	slot, i := c.find(&fk, db)
	if i == nilNode {
		return false
	}
	n := c.mem.at(i)
	if c.expired(n) || !sameWrites(n.key.writes, fk.writes) {
		return false
	}
	v, sum, exp := c.verdicts.value(n.verdict), n.sum, n.expires
	c.remove(slot, i)
	c.put(to, v, sum, exp)
	return true
}

// putFor is PutSum of an entry that expires in ttl, at most the cache's
// TTL, instead of the cache's TTL from now (a verdict restored from a
// state file, state.go).
func (c *LRU) putFor(k Key, v Verdict, sum uint64, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.expiry()
	if c.ttl > 0 && ttl < c.ttl {
		exp -= int64(c.ttl - ttl)
	}
	c.put(k, v, sum, exp)
}

// put stores v for k with expiry exp; c.mu is held.
func (c *LRU) put(k Key, v Verdict, sum uint64, exp int64) {
	c.mods++
	fk := fileKeyOf(&k)
	if db, ok := c.dbs.lookup(k.DB); ok {
		if _, i := c.find(&fk, db); i != nilNode {
			n := c.mem.at(i)
			old := n.verdict
			n.key.writes = fk.writes
			n.verdict, n.expires, n.sum = c.verdicts.acquire(v), exp, sum
			c.verdicts.release(old)
			c.toFront(i)
			return
		}
	}
	// Make room first: the node and the slot of the evicted entry serve
	// the new one.
	for c.count >= c.max {
		c.remove(c.slotOf(c.tail), c.tail)
		c.evict++
	}
	i := c.alloc()
	*c.mem.at(i) = node{key: fk, sum: sum, expires: exp, db: c.dbs.acquire(k.DB), verdict: c.verdicts.acquire(v), prev: nilNode, next: nilNode}
	c.insert(i)
	c.pushFront(i)
	c.count++
}

// Len is the number of entries, expired ones included until touched.
func (c *LRU) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// Evictions counts entries dropped to make room.
func (c *LRU) Evictions() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evict
}

// Purge drops every entry.
func (c *LRU) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
}

// expiry is the node.expires of an entry put now. Without a TTL it is
// never read, and the clock is not either.
func (c *LRU) expiry() int64 {
	if c.ttl <= 0 {
		return math.MaxInt64
	}
	now := c.now()
	if !c.started {
		c.epoch, c.started = now, true
	}
	// Time.Sub saturates, and uses the monotonic clock when both times
	// have it, as Time.After does.
	since := now.Sub(c.epoch)
	if since > math.MaxInt64-c.ttl {
		return math.MaxInt64
	}
	return int64(since + c.ttl)
}

// expired reports whether n's TTL has passed: an entry is valid up to and
// including its expiry.
func (c *LRU) expired(n *node) bool {
	return c.ttl > 0 && int64(c.now().Sub(c.epoch)) > n.expires
}

// The recency list.

func (c *LRU) pushFront(i int32) {
	n := c.mem.at(i)
	n.prev, n.next = nilNode, c.head
	if c.head != nilNode {
		c.mem.at(c.head).prev = i
	} else {
		c.tail = i
	}
	c.head = i
}

func (c *LRU) unlink(i int32) {
	n := c.mem.at(i)
	if n.prev != nilNode {
		c.mem.at(n.prev).next = n.next
	} else {
		c.head = n.next
	}
	if n.next != nilNode {
		c.mem.at(n.next).prev = n.prev
	} else {
		c.tail = n.prev
	}
	n.prev, n.next = nilNode, nilNode
}

func (c *LRU) toFront(i int32) {
	if c.head != i {
		c.unlink(i)
		c.pushFront(i)
	}
}

// Nodes.

// alloc returns a free node, reused or new.
func (c *LRU) alloc() int32 {
	if i := c.free; i != nilNode {
		c.free = c.mem.at(i).next
		return i
	}
	if c.nodes == c.mem.cap() {
		c.mem.addChunk()
	}
	i := int32(c.nodes)
	c.nodes++
	return i
}

// remove drops node i, found at slot, from the table, the list and the
// intern tables, and frees it.
func (c *LRU) remove(slot int, i int32) {
	c.unslot(slot)
	c.unlink(i)
	n := c.mem.at(i)
	c.dbs.release(n.db)
	c.verdicts.release(n.verdict)
	*n = node{prev: nilNode, next: c.free}
	c.free = i
	c.count--
	c.mods++
}

// Entry is one cached verdict, as Entries gives it.
type Entry struct {
	Key     Key
	Verdict Verdict
	Sum     uint64        // digest of the contents judged, 0 for none
	TTL     time.Duration // left until it expires; 0 for never
}

// Entries returns the entries that have not expired, most recently used
// first, and the count of changes made to the entries so far (it moves
// at every put and removal).
func (c *LRU) Entries() ([]Entry, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Entry, 0, c.count)
	var now int64
	if c.ttl > 0 {
		now = int64(c.now().Sub(c.epoch))
	}
	for i := c.head; i != nilNode; i = c.mem.at(i).next {
		n := c.mem.at(i)
		e := Entry{
			Key: Key{Dev: n.key.dev, Ino: n.key.ino, Size: n.key.size, MtimeNs: n.key.mtime, CtimeNs: n.key.ctime,
				DB: c.dbs.value(n.db), Gen: n.key.gen, Writes: n.key.writes},
			Verdict: c.verdicts.value(n.verdict),
			Sum:     n.sum,
		}
		if c.ttl > 0 {
			if now > n.expires {
				continue
			}
			e.TTL = time.Duration(n.expires - now)
		}
		out = append(out, e)
	}
	return out, c.mods
}

// The table of slots.

func (c *LRU) hash(fk *fileKey, db uint32) uint64 {
	h := hashKey{fileKey: *fk, db: uint64(db)}
	h.writes = 0 // a key finds the entry of its file state whatever its Writes (see GetSum)
	return maphash.Comparable(c.seed, h)
}

// home is the slot where probing for node i starts.
func (c *LRU) home(i int32) int {
	n := c.mem.at(i)
	return int(c.hash(&n.key, n.db) & uint64(len(c.mem.slots)-1))
}

// find returns the node of (fk, db) and its slot, or nilNode; the node's
// writes may differ from fk's.
func (c *LRU) find(fk *fileKey, db uint32) (slot int, i int32) {
	if len(c.mem.slots) == 0 {
		return 0, nilNode
	}
	mask := len(c.mem.slots) - 1
	for s := int(c.hash(fk, db)) & mask; ; s = (s + 1) & mask {
		switch j := c.mem.slots[s] - 1; {
		case j == nilNode:
			return s, nilNode
		case sameState(&c.mem.at(j).key, fk) && c.mem.at(j).db == db:
			return s, j
		}
	}
}

// slotOf returns the slot of node i, which is in the table.
func (c *LRU) slotOf(i int32) int {
	mask := len(c.mem.slots) - 1
	s := c.home(i)
	for c.mem.slots[s]-1 != i {
		s = (s + 1) & mask
	}
	return s
}

// insert puts node i, whose key is not in the table, in the table.
func (c *LRU) insert(i int32) {
	if (c.count+1)*4 > len(c.mem.slots)*3 {
		c.grow()
	}
	c.place(i)
}

func (c *LRU) place(i int32) {
	mask := len(c.mem.slots) - 1
	s := c.home(i)
	for c.mem.slots[s] != 0 {
		s = (s + 1) & mask
	}
	c.mem.slots[s] = i + 1
}

// grow doubles the table.
func (c *LRU) grow() {
	c.mem.setSlots(max(2*len(c.mem.slots), minSlots))
	for i := c.head; i != nilNode; i = c.mem.at(i).next {
		c.place(i)
	}
}

// unslot empties slot s, moving back the entries after it that probing
// would no longer reach (Knuth's algorithm R: no tombstones).
func (c *LRU) unslot(s int) {
	mask := len(c.mem.slots) - 1
	hole := s
	for t := (s + 1) & mask; c.mem.slots[t] != 0; t = (t + 1) & mask {
		h := c.home(c.mem.slots[t] - 1)
		// The entry at t stays if its home is cyclically in (hole, t].
		if hole <= t && hole < h && h <= t || hole > t && (hole < h || h <= t) {
			continue
		}
		c.mem.slots[hole] = c.mem.slots[t]
		hole = t
	}
	c.mem.slots[hole] = 0
}

// interner numbers the distinct values in use, counting the uses of each,
// so that a node stores a uint32 instead of strings, and every entry with
// one value shares one copy of it.
type interner[T comparable] struct {
	clone func(T) T // so that no interned value keeps a caller's buffer alive
	ids   map[T]uint32
	vals  []T
	refs  []uint32 // uses of vals[id]; 0 if id is free
	free  []uint32
}

// lookup returns the id of v, if v is in use.
func (t *interner[T]) lookup(v T) (uint32, bool) {
	id, ok := t.ids[v]
	return id, ok
}

// acquire returns the id of v and counts one more use of it.
func (t *interner[T]) acquire(v T) uint32 {
	id, ok := t.ids[v]
	if !ok {
		if t.ids == nil {
			t.ids = make(map[T]uint32)
		}
		v = t.clone(v)
		if n := len(t.free); n > 0 {
			id, t.free = t.free[n-1], t.free[:n-1]
			t.vals[id] = v
		} else {
			id = uint32(len(t.vals))
			t.vals, t.refs = append(t.vals, v), append(t.refs, 0)
		}
		t.ids[v] = id
	}
	t.refs[id]++
	return id
}

// release counts one use of id less, forgetting its value after the last.
func (t *interner[T]) release(id uint32) {
	if t.refs[id]--; t.refs[id] == 0 {
		delete(t.ids, t.vals[id])
		var zero T
		t.vals[id] = zero
		t.free = append(t.free, id)
	}
}

func (t *interner[T]) value(id uint32) T { return t.vals[id] }

func cloneVerdict(v Verdict) Verdict {
	v.Signature, v.Backend, v.SHA256 = strings.Clone(v.Signature), strings.Clone(v.Backend), strings.Clone(v.SHA256)
	return v
}
