package cache

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Freshness of verdicts, and the policy a live Gate can change.
//
// A verdict is only as good as the signatures that made it. Cache keys
// carry the database version clamd reports (SetDatabase) and a generation
// that Invalidate bumps, for changes the version does not show (new
// unofficial signatures, a database directory being rewritten). A scan
// puts its verdict under the key it captured before scanning: if the
// generation moved meanwhile, the file is scanned again, and a verdict
// put under a passed generation is never found.

// Policy is the part of Options that SetPolicy changes on a live Gate.
type Policy struct {
	MaxSize       int64 // files larger than this are not streamed; 0 for no limit
	AllowOversize bool  // on_oversize = "allow"
	AllowOnError  bool  // on_error = "allow"
}

// SetPolicy replaces the scan policy; it applies to the next decision.
// Cached verdicts stay valid: they judge bytes, not policy.
func (g *Gate) SetPolicy(p Policy) { g.policy.Store(&p) }

// Policy returns the policy in force.
func (g *Gate) Policy() Policy { return *g.pol() }

func (g *Gate) pol() *Policy { return g.policy.Load() }

// freshness is the Gate's generation and reload window.
type freshness struct {
	gen          atomic.Uint64
	noCacheUntil atomic.Int64 // unix ns; no verdict is cached before then

	mu        sync.Mutex  // guards windowEnd
	windowEnd *time.Timer // bumps gen when the window closes
}

// keyOf builds the cache key of a file state under the current database
// and generations.
func (g *Gate) keyOf(st *unix.Stat_t) Key {
	k := KeyOf(st, g.Database())
	k.Gen = g.fresh.gen.Load()
	k.Writes = g.writes.of(st.Dev, st.Ino)
	return k
}

// caching reports whether a new verdict may be cached now.
func (g *Gate) caching() bool { return time.Now().UnixNano() >= g.fresh.noCacheUntil.Load() }

// Generation counts invalidations, for tests and metrics.
func (g *Gate) Generation() uint64 { return g.fresh.gen.Load() }

// Caching reports whether new verdicts are cached now, that is, whether
// no reload window is open.
func (g *Gate) Caching() bool { return g.caching() }

// Invalidate makes every cached verdict stale at once: no key made before
// matches any more, scans in flight scan again, and the cache is emptied.
//
// With window > 0 it also opens a reload window: clamd may still be
// loading the new signatures and answering with the old ones, so until
// window has passed no verdict is cached (every open scans), and when it
// closes every verdict is invalidated once more. A new Invalidate during
// a window extends it.
func (g *Gate) Invalidate(window time.Duration) {
	g.fresh.mu.Lock()
	defer g.fresh.mu.Unlock()
	if window > 0 {
		until := time.Now().Add(window).UnixNano()
		if until > g.fresh.noCacheUntil.Load() {
			g.fresh.noCacheUntil.Store(until)
		}
		if g.fresh.windowEnd != nil {
			g.fresh.windowEnd.Stop()
		}
		wait := time.Duration(g.fresh.noCacheUntil.Load() - time.Now().UnixNano())
		g.fresh.windowEnd = time.AfterFunc(wait, func() {
			g.fresh.gen.Add(1)
			g.lru.Purge()
			g.log.Debug("reload window closed; verdicts cached again", "generation", g.fresh.gen.Load())
		})
	}
	g.fresh.gen.Add(1)
	g.lru.Purge()
}
