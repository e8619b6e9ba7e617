package cache

// Prewarm: scans ahead of the first opens, at the lowest priority.
//
// A prewarm walk (fs.Mounted.Prewarm) hands the gate one file at a time.
// Before a file that needs a scan, Prewarm waits until no open waits for
// a scan: Check and Prescan count themselves in Gate.demand from the
// moment they need a scan until it is over (waiting for a slot, joined to
// a shared scan, or scanning), and a prewarm scan starts only when that
// count is zero. The walk is sequential, so an open waits behind at most
// the one prewarm scan already running when it came.
//
// Lock order: demand.mu is a leaf.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/clamav"
)

// PrewarmResult says what a scan ahead of the opens (Prewarm, and Prescan
// after a write) did with one file.
type PrewarmResult int

const (
	PrewarmClean    PrewarmResult = iota // scanned now, clean; the verdict is cached
	PrewarmInfected                      // scanned now, infected; the verdict is cached, so opens are denied
	PrewarmCached                        // a verdict was cached already: no scan
	PrewarmSkipped                       // nothing to scan: empty, over max_size, excluded, or not a regular file
	PrewarmError                         // no verdict: nothing is cached, the next open scans
)

// PrewarmResults lists every PrewarmResult, for metrics.
var PrewarmResults = []PrewarmResult{PrewarmClean, PrewarmInfected, PrewarmCached, PrewarmSkipped, PrewarmError}

// String is the result as a metric label: clean, infected, cached,
// skipped or error.
func (r PrewarmResult) String() string {
	switch r {
	case PrewarmClean:
		return "clean"
	case PrewarmInfected:
		return "infected"
	case PrewarmCached:
		return "cached"
	case PrewarmSkipped:
		return "skipped"
	}
	return "error"
}

// Prewarm retries a file while no clamd can be reached, every
// prewarmRetry at first and then less often, up to maxPrewarmRetry.
var prewarmRetry, maxPrewarmRetry = time.Second, 30 * time.Second

// Prewarm judges f, the file at rel (relative to the mount root), before
// anyone opens it, and caches the verdict. It is for a walk of the whole
// tree at mount time: when f needs a scan, it first waits until no open
// waits for one (and no reload window is open), so that opens come first.
// An infected file is logged at WARN; its verdict is cached, so opens of
// it are denied from the cache.
//
// While no clamd can be reached (clamav.ErrUnavailable), Prewarm waits
// and tries the same file again, until one can or ctx is done.
//
// Prewarm returns when the file is judged, or at once when ctx is done
// (with ctx's error); a scan already started then goes on in the
// background and its verdict is cached as usual. The error is why no
// verdict was reached (PrewarmError), or, with PrewarmSkipped, why clamd
// did not take the file (its stream limit). f stays the caller's.
func (g *Gate) Prewarm(ctx context.Context, f *os.File, rel string) (PrewarmResult, error) {
	if err := ctx.Err(); err != nil {
		return PrewarmError, err
	}
	// Our own descriptor, as in check: the caller closes f when Prewarm
	// returns, and a scan may outlive a cancelled Prewarm.
	src, err := reopen(f)
	if err != nil {
		return PrewarmError, fmt.Errorf("%w: %v", clamav.ErrRead, err)
	}
	type settled struct {
		r   PrewarmResult
		err error
	}
	ch := make(chan settled, 1)
	go func() {
		defer src.Close()
		for wait := prewarmRetry; ; wait = min(2*wait, maxPrewarmRetry) {
			// The scan is not the walk's: ctx does not cancel it.
			r, v, err := g.settle(context.Background(), src, 0, func() error { return g.waitIdle(ctx) }, false)
			if errors.Is(err, clamav.ErrUnavailable) && ctx.Err() != nil {
				// Stopped while it waited for clamd (during this
				// attempt): stopped, as between attempts below.
				ch <- settled{PrewarmError, ctx.Err()}
				return
			}
			if errors.Is(err, clamav.ErrUnavailable) {
				// No clamd to be reached, as while it still loads its
				// database at boot: wait for one rather than walk the
				// whole tree into errors.
				g.log.Info("prewarm waits for clamd", "err", err, "retry_in", wait)
				t := time.NewTimer(wait)
				select {
				case <-t.C:
					continue
				case <-ctx.Done():
					t.Stop()
					ch <- settled{PrewarmError, ctx.Err()}
					return
				}
			}
			if r == PrewarmInfected {
				g.log.Warn("infected file found by prewarm", "path", rel, "signature", v.Signature, "clamd", v.Backend)
			}
			ch <- settled{r, err}
			return
		}
	}()
	select {
	case s := <-ch:
		return s.r, s.err
	case <-ctx.Done():
		select {
		case s := <-ch:
			return s.r, s.err
		default:
			return PrewarmError, ctx.Err()
		}
	}
}

// settle makes sure a verdict for the current state of src is cached,
// scanning src unless one is: the part that the scans ahead of the opens
// (Prescan, Prewarm) share; judge, keyOf, the cache and the shared scan
// are the same as for an open. A scan settle starts runs under ctx (see
// scan); a shared scan started by another that ends superseded is not
// settle's answer: it looks again. ready, when not nil, is called once a
// scan is needed, before it starts; the state is then looked up again,
// since an open may have judged it meanwhile. An error from ready is
// returned as it is, with nothing scanned. bg: a scan after a write,
// which takes its scan slot with the lowest priority (slots.go) before
// its flight starts, and then looks the state up again too. src is the
// Gate's own descriptor (see reopen); uid is whose scan it is (slots.go).
func (g *Gate) settle(ctx context.Context, src *os.File, uid uint32, ready func() error, bg bool) (PrewarmResult, Verdict, error) {
	waited := ready == nil
	held := false // a slot taken for the scan (bg)
	defer func() {
		if held {
			g.slots.release()
		}
	}()
	var err error
	for range maxAttempts {
		var st unix.Stat_t
		since := time.Now().UnixNano()
		if err := unix.Fstat(int(src.Fd()), &st); err != nil {
			return PrewarmError, Verdict{}, fmt.Errorf("%w: fstat: %v", clamav.ErrRead, err)
		}
		if g.judge(&st) != toScan {
			return PrewarmSkipped, Verdict{}, nil
		}
		key := g.keyOf(&st)
		if v, _, ok := g.lookup(key, src, false); ok {
			return PrewarmCached, v, nil
		}
		if !waited {
			waited = true
			if err := ready(); err != nil {
				return PrewarmError, Verdict{}, err
			}
			continue
		}
		if bg && !held {
			if !g.slots.acquire(ctx, uid, true, g.hooks.bgSlotWait) {
				return PrewarmError, Verdict{}, context.Cause(ctx)
			}
			held = true
			if h := g.hooks.bgSlotHeld; h != nil {
				h()
			}
			continue
		}
		var v any
		// The slot held goes to the scan if this flight is ours (do runs
		// it in this goroutine). If it is someone else's (an open that
		// came between the slot and here), the slot is given back before
		// waiting for it: that scan may be waiting for this very slot.
		v, err, _ = g.sf.do(key, func() (any, error) {
			h := held
			held = false
			return g.scan(ctx, src, uid, key, since, h)
		}, func() {
			if held {
				held = false
				g.slots.release()
			}
		})
		switch {
		case errors.Is(err, errSuperseded) && ctx.Err() == nil:
			continue // someone else's scan after a write
		case errors.Is(err, clamav.ErrSizeLimit):
			return PrewarmSkipped, Verdict{}, err
		case err != nil:
			return PrewarmError, Verdict{}, err
		case v.(judged).v.Infected:
			return PrewarmInfected, v.(judged).v, nil
		}
		return PrewarmClean, v.(judged).v, nil
	}
	return PrewarmError, Verdict{}, err
}

// waitIdle waits until no open waits for a scan and verdicts are cached
// (no reload window: a verdict made now would be thrown away), or until
// ctx is done.
func (g *Gate) waitIdle(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if wait := g.fresh.noCacheUntil.Load() - time.Now().UnixNano(); wait > 0 {
			g.log.Debug("prewarm waits for the reload window to close", "wait", time.Duration(wait))
			if h := g.hooks.idleWait; h != nil {
				h()
			}
			t := time.NewTimer(time.Duration(wait))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			continue
		}
		idle := g.demand.idle()
		if idle != closedChan {
			g.log.Debug("prewarm waits: opens wait for scans")
			if h := g.hooks.idleWait; h != nil {
				h()
			}
		}
		select {
		case <-idle:
			if g.caching() {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// demand counts the scans that opens (and scans after a write) wait for;
// Prewarm scans only while it is zero. (Scans after a write yield to
// opens at the scan slots instead: slots.go.)
type demand struct {
	mu   sync.Mutex    // guards n and zero
	n    int           // scans waited for
	zero chan struct{} // closed when n drops back to 0; made by idle while n > 0
}

// closedChan is an idle demand's channel.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (d *demand) add() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
}

func (d *demand) done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n--
	if d.n == 0 && d.zero != nil {
		close(d.zero)
		d.zero = nil
	}
}

// idle returns a channel that is closed once nothing waits for a scan
// (already closed if nothing does now).
func (d *demand) idle() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == 0 {
		return closedChan
	}
	if d.zero == nil {
		// Only when asked: most opens wait for a scan while nobody does.
		d.zero = make(chan struct{})
	}
	return d.zero
}
