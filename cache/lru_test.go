package cache

import (
	"strconv"
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
