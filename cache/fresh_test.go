package cache_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// realPool is a Pool over one private clamd, checked once.
func realPool(t *testing.T, c *clamdtest.Clamd) *clamav.Pool {
	t.Helper()
	network, addr, err := clamav.ParseAddress(c.Address())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p, err := clamav.NewPool([]*clamav.Client{cl}, clamav.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if p.Check(t.Context()) != 1 {
		t.Fatalf("clamd not up: %+v", p.Status())
	}
	return p
}

func newFile(t *testing.T, content []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

var who = cache.Opener{Path: "f", Pid: 1, Uid: 2}

func decide(t *testing.T, g *cache.Gate, f *os.File) cache.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	return g.Check(ctx, f, who)
}

// TestGateFreshSignatures: a new signature invalidates the verdict of a
// file cached clean. The database directory changes first (Invalidate
// with a window) while clamd still runs the old engine: verdicts from that
// engine are served but not cached; once clamd has reloaded, the next
// open is denied.
func TestGateFreshSignatures(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	g := cache.NewGate(realPool(t, c), cache.Options{MaxEntries: 16, Timeout: 20 * time.Second})
	body := []byte(fmt.Sprintf("harmless until today %d", time.Now().UnixNano()))
	f := newFile(t, body)

	if d := decide(t, g, f); !d.Allow || d.Cached {
		t.Fatalf("first open: %+v; want clean, scanned", d)
	}
	if d := decide(t, g, f); !d.Allow || !d.Cached {
		t.Fatalf("second open: %+v; want clean, cached", d)
	}

	if err := c.AddNDBSignature("Clamfuse.Test.Fresh", hex.EncodeToString(body)); err != nil {
		t.Fatal(err)
	}
	gen := g.Generation()
	g.Invalidate(time.Minute) // what the database directory watcher does
	if g.Generation() == gen || g.Caching() || g.Cache().Len() != 0 {
		t.Fatalf("after Invalidate: generation %d -> %d, caching %v, %d entries", gen, g.Generation(), g.Caching(), g.Cache().Len())
	}
	for i := range 2 {
		// clamd has not reloaded: the old engine says clean, and that
		// must not be cached.
		if d := decide(t, g, f); !d.Allow || d.Cached {
			t.Fatalf("open %d in the reload window: %+v; want clean from a scan", i, d)
		}
	}
	if g.Cache().Len() != 0 {
		t.Errorf("%d verdicts cached during the reload window", g.Cache().Len())
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	d := decide(t, g, f)
	if d.Allow || d.Reason != cache.ReasonInfected || d.Verdict.Signature != "Clamfuse.Test.Fresh.UNOFFICIAL" {
		t.Fatalf("after reload: %+v; want denied as Clamfuse.Test.Fresh.UNOFFICIAL", d)
	}
	if d.Verdict.Backend != c.Address() {
		t.Errorf("Backend = %q; want %q", d.Verdict.Backend, c.Address())
	}
}

// TestGateReloadWindowCloses: when the window ends the generation moves
// once more and verdicts are cached again.
func TestGateReloadWindowCloses(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	g := cache.NewGate(realPool(t, c), cache.Options{MaxEntries: 16})
	f := newFile(t, []byte("plain text"))
	g.Invalidate(300 * time.Millisecond)
	gen := g.Generation()
	if d := decide(t, g, f); !d.Allow || d.Cached || g.Cache().Len() != 0 {
		t.Fatalf("in the window: %+v, %d cached", d, g.Cache().Len())
	}
	deadline := time.Now().Add(5 * time.Second)
	for !g.Caching() || g.Generation() == gen {
		if time.Now().After(deadline) {
			t.Fatalf("window still open after 5s (generation %d)", g.Generation())
		}
		time.Sleep(10 * time.Millisecond)
	}
	decide(t, g, f)
	if d := decide(t, g, f); !d.Allow || !d.Cached {
		t.Fatalf("after the window: %+v; want cached", d)
	}
}

// invalidatingScanner calls Invalidate during its first scan, as a
// database change would, and counts scans.
type invalidatingScanner struct {
	cache.Scanner
	g     atomic.Pointer[cache.Gate]
	scans atomic.Int32
}

func (s *invalidatingScanner) ScanFile(ctx context.Context, f *os.File, size int64) (clamav.Result, error) {
	if s.scans.Add(1) == 1 {
		s.g.Load().Invalidate(0)
	}
	return s.Scanner.ScanFile(ctx, f, size)
}

// TestGateDatabaseChangesDuringScan: a verdict from a scan during which
// the database changed is not cached as current; the file is scanned
// again under the new generation.
func TestGateDatabaseChangesDuringScan(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	s := &invalidatingScanner{Scanner: realPool(t, c)}
	g := cache.NewGate(s, cache.Options{MaxEntries: 16})
	s.g.Store(g)
	f := newFile(t, []byte("scanned twice"))
	d := decide(t, g, f)
	if !d.Allow || s.scans.Load() != 2 {
		t.Fatalf("%+v after %d scans; want clean after 2", d, s.scans.Load())
	}
	if d := decide(t, g, f); !d.Allow || !d.Cached {
		t.Fatalf("next open: %+v; want the second verdict cached", d)
	}
}

// TestGateSetPolicy: a live policy change applies to the next open.
func TestGateSetPolicy(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	g := cache.NewGate(realPool(t, c), cache.Options{MaxEntries: 16, MaxSize: 4})
	f := newFile(t, []byte("longer than four bytes"))
	if d := decide(t, g, f); d.Allow || d.Reason != cache.ReasonOversize {
		t.Fatalf("max_size 4: %+v; want denied as oversize", d)
	}
	g.SetPolicy(cache.Policy{MaxSize: 4, AllowOversize: true})
	if d := decide(t, g, f); !d.Allow || d.Reason != cache.ReasonOversize {
		t.Fatalf("on_oversize allow: %+v; want allowed unscanned", d)
	}
	g.SetPolicy(cache.Policy{MaxSize: 1 << 20})
	if d := decide(t, g, f); !d.Allow || d.Reason != cache.ReasonClean {
		t.Fatalf("max_size 1MiB: %+v; want scanned clean", d)
	}
	if got := g.Policy(); !reflect.DeepEqual(got, cache.Policy{MaxSize: 1 << 20}) {
		t.Errorf("Policy() = %+v", got)
	}
}
