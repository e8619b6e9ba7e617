package cache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable time source for the LRU's now field.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testKey is the key of the i-th test file.
func testKey(i int) Key {
	return Key{Dev: 1, Ino: uint64(i), Size: 10, MtimeNs: 100, CtimeNs: 200, DB: "27000"}
}

// lruOp is one step of an LRU scenario.
type lruOp struct {
	do   string        // "put", "get", "tick", "purge", "len", "evictions"
	k    int           // put, get
	v    string        // put: the verdict's Backend; get: the one expected on a hit
	hit  bool          // get: whether a hit is expected
	d    time.Duration // tick
	want int           // len, evictions
}

func lruPut(k int, v string) lruOp  { return lruOp{do: "put", k: k, v: v} }
func lruHit(k int, v string) lruOp  { return lruOp{do: "get", k: k, v: v, hit: true} }
func lruMiss(k int) lruOp           { return lruOp{do: "get", k: k} }
func lruTick(d time.Duration) lruOp { return lruOp{do: "tick", d: d} }
func lruPurge() lruOp               { return lruOp{do: "purge"} }
func lruLen(n int) lruOp            { return lruOp{do: "len", want: n} }
func lruEvictions(n int) lruOp      { return lruOp{do: "evictions", want: n} }
func verdictOf(v string) Verdict    { return Verdict{Backend: v} }

func TestLRU(t *testing.T) {
	tests := []struct {
		name string
		max  int
		ttl  time.Duration
		ops  []lruOp
	}{
		{"empty", 4, 0, []lruOp{lruMiss(1), lruLen(0), lruEvictions(0)}},
		{"put then get", 4, 0, []lruOp{lruPut(1, "a"), lruPut(2, "b"), lruHit(1, "a"), lruHit(2, "b"), lruMiss(3), lruLen(2)}},
		{"put replaces", 4, 0, []lruOp{lruPut(1, "a"), lruPut(1, "b"), lruHit(1, "b"), lruLen(1), lruEvictions(0)}},
		{"evicts least recently put", 2, 0, []lruOp{
			lruPut(1, "a"), lruPut(2, "b"), lruPut(3, "c"),
			lruMiss(1), lruHit(2, "b"), lruHit(3, "c"), lruLen(2), lruEvictions(1),
		}},
		{"get makes recent", 2, 0, []lruOp{
			lruPut(1, "a"), lruPut(2, "b"), lruHit(1, "a"), lruPut(3, "c"),
			lruMiss(2), lruHit(1, "a"), lruHit(3, "c"), lruEvictions(1),
		}},
		{"put of a known key makes recent", 2, 0, []lruOp{
			lruPut(1, "a"), lruPut(2, "b"), lruPut(1, "a2"), lruPut(3, "c"),
			lruMiss(2), lruHit(1, "a2"), lruHit(3, "c"), lruEvictions(1),
		}},
		{"evictions count each drop", 3, 0, []lruOp{
			lruPut(1, ""), lruPut(2, ""), lruPut(3, ""), lruPut(4, ""), lruPut(5, ""), lruPut(6, ""),
			lruLen(3), lruEvictions(3), lruMiss(1), lruMiss(2), lruMiss(3), lruHit(4, ""), lruHit(5, ""), lruHit(6, ""),
		}},
		{"max below one holds one", 0, 0, []lruOp{
			lruPut(1, "a"), lruHit(1, "a"), lruPut(2, "b"), lruMiss(1), lruHit(2, "b"), lruLen(1), lruEvictions(1),
		}},
		{"ttl: valid until it passes", 4, time.Minute, []lruOp{
			lruPut(1, "a"), lruTick(59 * time.Second), lruHit(1, "a"), lruTick(time.Second), lruHit(1, "a"),
			lruTick(time.Nanosecond), lruMiss(1), lruLen(0), lruEvictions(0),
		}},
		{"ttl: get does not extend", 4, time.Minute, []lruOp{
			lruPut(1, "a"), lruTick(50 * time.Second), lruHit(1, "a"), lruTick(11 * time.Second), lruMiss(1),
		}},
		{"ttl: put extends", 4, time.Minute, []lruOp{
			lruPut(1, "a"), lruTick(50 * time.Second), lruPut(1, "b"), lruTick(50 * time.Second), lruHit(1, "b"),
		}},
		{"ttl: expired entries count until touched", 4, time.Minute, []lruOp{
			lruPut(1, "a"), lruPut(2, "b"), lruTick(2 * time.Minute), lruLen(2),
			lruMiss(1), lruLen(1), lruMiss(2), lruLen(0),
		}},
		{"ttl: each entry has its own", 4, time.Minute, []lruOp{
			lruPut(1, "a"), lruTick(30 * time.Second), lruPut(2, "b"), lruTick(31 * time.Second), lruMiss(1), lruHit(2, "b"),
		}},
		{"ttl zero never expires", 4, 0, []lruOp{lruPut(1, "a"), lruTick(10000 * time.Hour), lruHit(1, "a")}},
		{"purge", 2, 0, []lruOp{
			lruPut(1, "a"), lruPut(2, "b"), lruPut(3, "c"), lruEvictions(1), lruPurge(),
			lruLen(0), lruMiss(2), lruMiss(3), lruEvictions(1), lruPut(1, "a"), lruHit(1, "a"), lruLen(1),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			c := NewLRU(tt.max, tt.ttl)
			c.now = clock.now
			for i, op := range tt.ops {
				switch op.do {
				case "put":
					c.Put(testKey(op.k), verdictOf(op.v))
				case "get":
					v, ok := c.Get(testKey(op.k))
					if ok != op.hit || (ok && v.Backend != op.v) {
						t.Errorf("op %d: Get(%d) = %q, %v; want %q, %v", i, op.k, v.Backend, ok, op.v, op.hit)
					}
				case "tick":
					clock.advance(op.d)
				case "purge":
					c.Purge()
				case "len":
					if got := c.Len(); got != op.want {
						t.Errorf("op %d: Len() = %d; want %d", i, got, op.want)
					}
				case "evictions":
					if got := c.Evictions(); got != uint64(op.want) {
						t.Errorf("op %d: Evictions() = %d; want %d", i, got, op.want)
					}
				default:
					t.Fatalf("op %d: unknown op %q", i, op.do)
				}
			}
		})
	}
}

// Every field of a Key tells states apart.
func TestLRUKeyFields(t *testing.T) {
	base := testKey(1)
	variants := map[string]func(*Key){
		"dev":   func(k *Key) { k.Dev++ },
		"ino":   func(k *Key) { k.Ino++ },
		"size":  func(k *Key) { k.Size++ },
		"mtime": func(k *Key) { k.MtimeNs++ },
		"ctime": func(k *Key) { k.CtimeNs++ },
		"db":    func(k *Key) { k.DB = "27001" },
		"gen":   func(k *Key) { k.Gen++ },
		// A change through the mount moves both generations.
		"writes": func(k *Key) { k.Writes += 1<<32 | 1 },
	}
	c := NewLRU(16, 0)
	c.Put(base, Verdict{Infected: true, Signature: "Eicar-Test-Signature"})
	for name, change := range variants {
		k := base
		change(&k)
		if v, ok := c.Get(k); ok {
			t.Errorf("%s changed: Get = %+v, true; want a miss", name, v)
		}
	}
	if v, ok := c.Get(base); !ok || !v.Infected || v.Signature != "Eicar-Test-Signature" {
		t.Errorf("Get(base) = %+v, %v; want the infected verdict", v, ok)
	}
}

// A verdict still matches a key one of whose two write generations is
// its own (another file sharing the other slot was written), and a Put of
// the same file state with other generations replaces it.
func TestLRUWritesShared(t *testing.T) {
	base := testKey(1)
	base.Writes = 7<<32 | 9
	c := NewLRU(16, 0)
	c.Put(base, Verdict{Backend: "b"})
	for _, w := range []struct {
		writes uint64
		hit    bool
	}{
		{7<<32 | 9, true},
		{8<<32 | 9, true},  // the first slot moved
		{7<<32 | 10, true}, // the second
		{8<<32 | 10, false},
		{0, false},
	} {
		k := base
		k.Writes = w.writes
		if _, ok := c.Get(k); ok != w.hit {
			t.Errorf("Writes %#x against %#x: hit %v, want %v", w.writes, base.Writes, ok, w.hit)
		}
	}
	k := base
	k.Writes = 8<<32 | 10
	c.Put(k, Verdict{Backend: "c"})
	if v, ok := c.Get(k); !ok || v.Backend != "c" || c.Len() != 1 {
		t.Errorf("after a Put with new generations: %+v, %v, %d entries; want c's verdict, the only entry", v, ok, c.Len())
	}
	if _, ok := c.Get(base); ok {
		t.Error("the old generations still match after the Put of new ones")
	}
}

// A digest stored with a verdict comes back with it, is replaced with
// it, and is 0 for a verdict put without one.
func TestLRUSum(t *testing.T) {
	c := NewLRU(16, 0)
	clean := Verdict{Backend: "b"}
	c.Put(testKey(1), clean)
	if v, sum, ok := c.GetSum(testKey(1)); !ok || v != clean || sum != 0 {
		t.Errorf("GetSum after Put = %+v, %#x, %v; want %+v, 0, true", v, sum, ok, clean)
	}
	c.PutSum(testKey(1), clean, 0xfeed)
	if v, sum, ok := c.GetSum(testKey(1)); !ok || v != clean || sum != 0xfeed {
		t.Errorf("GetSum after PutSum = %+v, %#x, %v; want %+v, 0xfeed, true", v, sum, ok, clean)
	}
	c.PutSum(testKey(2), clean, 0xbeef)
	if _, sum, _ := c.GetSum(testKey(2)); sum != 0xbeef {
		t.Errorf("GetSum of another key = %#x; want 0xbeef", sum)
	}
	if _, sum, _ := c.GetSum(testKey(1)); sum != 0xfeed {
		t.Errorf("GetSum after another PutSum = %#x; want 0xfeed", sum)
	}
	if _, _, ok := c.GetSum(testKey(3)); ok {
		t.Error("GetSum of a key never put: hit")
	}
}

func TestLRUConcurrent(t *testing.T) {
	const (
		max        = 32
		keys       = 100
		goroutines = 8
		ops        = 2000
	)
	clock := newFakeClock()
	c := NewLRU(max, time.Hour)
	c.now = clock.now
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range ops {
				k := (g*7 + i*13) % keys
				switch i % 5 {
				case 0, 1:
					c.Put(testKey(k), verdictOf(strconv.Itoa(k)))
				case 2, 3:
					if v, ok := c.Get(testKey(k)); ok && v.Backend != strconv.Itoa(k) {
						t.Errorf("Get(%d) = %q, the verdict of another key", k, v.Backend)
					}
				default:
					if i%500 == 0 {
						c.Purge()
					}
					if i%250 == 0 {
						clock.advance(time.Minute)
					}
					if n := c.Len(); n > max {
						t.Errorf("Len() = %d, over max %d", n, max)
					}
					_ = c.Evictions()
				}
			}
		})
	}
	wg.Wait()
	if n := c.Len(); n > max {
		t.Errorf("Len() = %d after the storm, over max %d", n, max)
	}
	if c.Evictions() == 0 {
		t.Errorf("Evictions() = 0; want > 0 after %d puts of %d keys into %d slots", goroutines*ops*2/5, keys, max)
	}
}

// benchEntries is the size of the cache the benchmarks work on, the one
// issue #3 sizes memory for.
const benchEntries = 100_000

// A hit in a full cache with a TTL, as on the open path.
func BenchmarkLRUGet(b *testing.B) {
	c := NewLRU(benchEntries, time.Hour)
	keys := make([]Key, benchEntries)
	for i := range keys {
		keys[i] = memKey(i)
		c.Put(keys[i], memVerdict(i))
	}
	i := 0
	for b.Loop() {
		if _, ok := c.Get(keys[i]); !ok {
			b.Fatalf("Get(keys[%d]) missed", i)
		}
		i = (i + 7919) % benchEntries
	}
}

// A put of a new key into a full cache with a TTL: one insertion and one
// eviction.
func BenchmarkLRUPut(b *testing.B) {
	c := NewLRU(benchEntries, time.Hour)
	keys := make([]Key, 4*benchEntries)
	for i := range keys {
		keys[i] = memKey(i)
	}
	v := memVerdict(0)
	for i := range benchEntries {
		c.Put(keys[i], v)
	}
	i := benchEntries
	for b.Loop() {
		c.Put(keys[i], v)
		if i++; i == len(keys) {
			i = 0
		}
	}
}

// modelEntry is an entry of lruModel.
type modelEntry struct {
	k   Key
	v   Verdict
	exp time.Time
}

// lruModel is the LRU as it was before issue #3 made it compact: a list
// of entries, most recently used first. The LRU must agree with it.
type lruModel struct {
	max   int
	ttl   time.Duration
	ents  []modelEntry
	evict uint64
}

func (m *lruModel) get(k Key, now time.Time) (Verdict, bool) {
	i := slices.IndexFunc(m.ents, func(e modelEntry) bool { return e.k == k })
	if i < 0 {
		return Verdict{}, false
	}
	e := m.ents[i]
	m.ents = slices.Delete(m.ents, i, i+1)
	if m.ttl > 0 && now.After(e.exp) {
		return Verdict{}, false
	}
	m.ents = slices.Insert(m.ents, 0, e)
	return e.v, true
}

func (m *lruModel) put(k Key, v Verdict, now time.Time) {
	if i := slices.IndexFunc(m.ents, func(e modelEntry) bool { return e.k == k }); i >= 0 {
		m.ents = slices.Delete(m.ents, i, i+1)
	}
	m.ents = slices.Insert(m.ents, 0, modelEntry{k: k, v: v, exp: now.Add(m.ttl)})
	for len(m.ents) > max(m.max, 1) {
		m.ents = m.ents[:len(m.ents)-1]
		m.evict++
	}
}

// checkLRU verifies the invariants of c's nodes, table, list and intern
// tables.
func checkLRU(c *LRU) error {
	inList := make(map[int32]bool)
	dbRefs, verdictRefs := make(map[uint32]uint32), make(map[uint32]uint32)
	prev := int32(nilNode)
	for i := c.head; i != nilNode; i = c.mem.at(i).next {
		n := c.mem.at(i)
		if inList[i] || len(inList) > c.nodes {
			return fmt.Errorf("node %d: the list loops", i)
		}
		inList[i] = true
		if n.prev != prev {
			return fmt.Errorf("node %d: prev %d; want %d", i, n.prev, prev)
		}
		if _, j := c.find(&n.key, n.db); j != i {
			return fmt.Errorf("node %d: its key finds node %d", i, j)
		}
		dbRefs[n.db]++
		verdictRefs[n.verdict]++
		prev = i
	}
	if c.tail != prev {
		return fmt.Errorf("tail %d; want %d", c.tail, prev)
	}
	if len(inList) != c.count {
		return fmt.Errorf("%d nodes in the list; count %d", len(inList), c.count)
	}
	used := 0
	for s, v := range c.mem.slots {
		if v == 0 {
			continue
		}
		used++
		if !inList[v-1] {
			return fmt.Errorf("slot %d: node %d is not in the list", s, v-1)
		}
	}
	if used != c.count {
		return fmt.Errorf("%d slots used; count %d", used, c.count)
	}
	if len(c.mem.slots) > 0 && c.count*4 > len(c.mem.slots)*3 {
		return fmt.Errorf("%d entries in %d slots", c.count, len(c.mem.slots))
	}
	free := 0
	for i := c.free; i != nilNode; i = c.mem.at(i).next {
		if inList[i] || free > c.nodes {
			return fmt.Errorf("free node %d is in use, or the free list loops", i)
		}
		free++
	}
	if free+c.count != c.nodes {
		return fmt.Errorf("%d free + %d used nodes; %d nodes", free, c.count, c.nodes)
	}
	if err := checkInterner(&c.dbs, dbRefs); err != nil {
		return fmt.Errorf("databases: %v", err)
	}
	if err := checkInterner(&c.verdicts, verdictRefs); err != nil {
		return fmt.Errorf("verdicts: %v", err)
	}
	return nil
}

// checkInterner verifies that t counts the uses of its ids.
func checkInterner[T comparable](t *interner[T], uses map[uint32]uint32) error {
	if len(t.ids) != len(uses) {
		return fmt.Errorf("%d values interned; %d in use", len(t.ids), len(uses))
	}
	for v, id := range t.ids {
		if t.vals[id] != v || t.refs[id] != uses[id] {
			return fmt.Errorf("id %d: value %v, %d refs; want %v, %d", id, t.vals[id], t.refs[id], v, uses[id])
		}
	}
	if len(t.ids)+len(t.free) != len(t.vals) {
		return fmt.Errorf("%d ids + %d free; %d values", len(t.ids), len(t.free), len(t.vals))
	}
	return nil
}

// The compact LRU behaves as the plain one did, whatever the operations:
// random puts, gets, ticks and purges over a few databases, generations
// and verdicts, in caches small and large enough to probe, wrap, shift
// back and grow their tables.
func TestLRUModel(t *testing.T) {
	dbs := []string{"27000", "27001", "27002"}
	verdicts := []Verdict{
		{Backend: "unix:/a"},
		{Backend: "unix:/b"},
		{Infected: true, Signature: "Eicar-Test-Signature", Backend: "unix:/a"},
		{Infected: true, Signature: "Win.Trojan.Agent-1", Backend: "unix:/a"},
		{Infected: true, Signature: "Win.Trojan.Agent-1", Backend: "unix:/b"},
	}
	for _, max := range []int{0, 1, 2, 5, 6, 7, 16, 100} {
		for _, ttl := range []time.Duration{0, 10 * time.Second} {
			t.Run(fmt.Sprintf("max=%d,ttl=%v", max, ttl), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(max), uint64(ttl)))
				clock := newFakeClock()
				c := NewLRU(max, ttl)
				c.now = clock.now
				m := &lruModel{max: max, ttl: ttl}
				randKey := func() Key {
					k := testKey(rng.IntN(3 * (max + 2)))
					k.DB = strings.Clone(dbs[rng.IntN(len(dbs))])
					k.Gen = uint64(rng.IntN(2))
					return k
				}
				for op := range 20000 {
					switch r := rng.IntN(1000); {
					case r < 450:
						k, v := randKey(), verdicts[rng.IntN(len(verdicts))]
						c.Put(k, v)
						m.put(k, v, clock.now())
					case r < 900:
						k := randKey()
						got, ok := c.Get(k)
						want, wantOK := m.get(k, clock.now())
						if got != want || ok != wantOK {
							t.Fatalf("op %d: Get(%+v) = %+v, %v; want %+v, %v", op, k, got, ok, want, wantOK)
						}
					case r < 998:
						clock.advance(time.Duration(rng.IntN(2000)) * time.Millisecond)
					default:
						c.Purge()
						m.ents = nil
					}
					if c.Len() != len(m.ents) || c.Evictions() != m.evict {
						t.Fatalf("op %d: Len() = %d, Evictions() = %d; want %d, %d", op, c.Len(), c.Evictions(), len(m.ents), m.evict)
					}
					if err := checkLRU(c); err != nil {
						t.Fatalf("op %d: %v", op, err)
					}
				}
			})
		}
	}
}

// Entries leave nothing behind: once the last entry naming a database
// version or a verdict is gone, so is the interned value.
func TestLRUForgetsValues(t *testing.T) {
	clock := newFakeClock()
	c := NewLRU(2, time.Minute)
	c.now = clock.now
	k1, k2, k3 := testKey(1), testKey(2), testKey(3)
	k2.DB = "27001"
	c.Put(k1, Verdict{Infected: true, Signature: "Eicar-Test-Signature", Backend: "a"})
	c.Put(k2, verdictOf("a"))
	c.Put(k3, verdictOf("b")) // evicts k1
	if _, ok := c.verdicts.ids[Verdict{Infected: true, Signature: "Eicar-Test-Signature", Backend: "a"}]; ok {
		t.Errorf("the verdict of the evicted key is still interned")
	}
	clock.advance(2 * time.Minute)
	c.Get(k2) // expires k2
	if _, ok := c.dbs.ids["27001"]; ok {
		t.Errorf("the database of the expired key is still interned")
	}
	c.Put(k3, verdictOf("c")) // replaces k3's verdict
	if _, ok := c.verdicts.ids[verdictOf("b")]; ok {
		t.Errorf("the replaced verdict is still interned")
	}
	if err := checkLRU(c); err != nil {
		t.Fatal(err)
	}
	c.Purge()
	if c.nodes != 0 || len(c.mem.slots) != 0 || len(c.dbs.vals) != 0 || len(c.verdicts.vals) != 0 {
		t.Errorf("after Purge: %d nodes, %d slots, %d databases, %d verdicts; want none", c.nodes, len(c.mem.slots), len(c.dbs.vals), len(c.verdicts.vals))
	}
}

// A TTL too long to add to the clock never expires.
func TestLRUHugeTTL(t *testing.T) {
	clock := newFakeClock()
	c := NewLRU(4, time.Duration(1<<63-1))
	c.now = clock.now
	c.Put(testKey(1), verdictOf("a"))
	clock.advance(100 * 365 * 24 * time.Hour)
	c.Put(testKey(2), verdictOf("b"))
	clock.advance(100 * 365 * 24 * time.Hour)
	if _, ok := c.Get(testKey(1)); !ok {
		t.Errorf("Get(1) missed 200 years in")
	}
	if _, ok := c.Get(testKey(2)); !ok {
		t.Errorf("Get(2) missed 100 years in")
	}
}
