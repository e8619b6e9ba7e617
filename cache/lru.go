package cache

import (
	"container/list"
	"sync"
	"time"
)

// Key identifies one state of one file under one signature database. Any
// change of content (size, mtime), of metadata (ctime, which the kernel
// updates on every write, chmod, rename or utimes and which nobody can set
// back), or of identity (device, inode) gives a different key, so a verdict
// never outlives the bytes it judged.
type Key struct {
	Dev     uint64
	Ino     uint64
	Size    int64
	MtimeNs int64
	CtimeNs int64
	DB      string // signature database version the verdict was made with
	Gen     uint64 // the Gate's generation (see Gate.Invalidate)
}

// Verdict is what clamd said of one file state.
type Verdict struct {
	Infected  bool
	Signature string // set iff Infected
	Backend   string // which clamd judged it
}

type entry struct {
	key     Key
	verdict Verdict
	expires time.Time
}

// LRU is a bounded map of verdicts with a time to live. It is safe for
// concurrent use.
type LRU struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex // guards ll, items and evictions
	ll    *list.List // front = most recently used; values are *entry
	items map[Key]*list.Element
	evict uint64
}

// NewLRU returns a cache of at most max entries, each valid for ttl.
func NewLRU(max int, ttl time.Duration) *LRU {
	if max < 1 {
		max = 1
	}
	return &LRU{max: max, ttl: ttl, now: time.Now, ll: list.New(), items: make(map[Key]*list.Element)}
}

// Get returns the verdict for k if one is cached and not expired.
func (c *LRU) Get(k Key) (Verdict, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return Verdict{}, false
	}
	e := el.Value.(*entry)
	if c.ttl > 0 && c.now().After(e.expires) {
		c.ll.Remove(el)
		delete(c.items, k)
		return Verdict{}, false
	}
	c.ll.MoveToFront(el)
	return e.verdict, true
}

// Put stores v for k, evicting the least recently used entry when full.
func (c *LRU) Put(k Key, v Verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(c.ttl)
	if el, ok := c.items[k]; ok {
		e := el.Value.(*entry)
		e.verdict, e.expires = v, exp
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&entry{key: k, verdict: v, expires: exp})
	for c.ll.Len() > c.max {
		el := c.ll.Back()
		c.ll.Remove(el)
		delete(c.items, el.Value.(*entry).key)
		c.evict++
	}
}

// Len is the number of entries, expired ones included until touched.
func (c *LRU) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
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
	c.ll.Init()
	clear(c.items)
}
