package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/clamav"
)

// Scanner judges an open file; *clamav.Pool and *clamav.Client are ones.
type Scanner interface {
	// ScanFile judges f, whose size the caller saw (fstat) as size: the
	// first size bytes streamed, or f itself passed to clamd, which then
	// reads it as it is (see clamav.Client.ScanFile). Either way the
	// caller must check afterwards that f did not change. It must return
	// soon once ctx is done: an open's own scan runs in the opener's
	// goroutine (Gate.lead), whose wait ctx bounds.
	ScanFile(ctx context.Context, f *os.File, size int64) (clamav.Result, error)
	String() string
}

// Options tune a Gate. The zero value of a policy field is the safe one.
type Options struct {
	MaxEntries    int           // verdicts kept
	TTL           time.Duration // how long a verdict is trusted
	MaxConcurrent int           // scans in flight at once
	Timeout       time.Duration // bound on one decision, queueing and rescans included
	MaxSize       int64         // files larger than this are not streamed
	AllowOversize bool          // on_oversize = "allow"
	AllowOnError  bool          // on_error = "allow"
	// VerifyMaxSize: a cached clean verdict of a file up to this size is
	// used only while the file holds the contents it judged (verify.go).
	// 0 verifies nothing; unlike the policy fields, its zero value is not
	// the safe one, but the cheap one.
	VerifyMaxSize int64
	Logger        *slog.Logger
}

// Opener says who asks to read which file, for the log.
type Opener struct {
	Path string // relative to the mount root
	Pid  uint32
	Uid  uint32
	// Stat, when not nil, is an fstat of the very descriptor asked
	// about, made after it was opened and before the Check: the cache
	// lookup uses it instead of an fstat of its own (one system call
	// less per cached open; the contents are still verified, verify.go).
	// A miss fstats afresh before it scans.
	Stat *unix.Stat_t
	// NoAtime says the descriptor asked about has O_NOATIME set already
	// (the opener puts its own flags back after the Check): the contents
	// are read for their digest as they are, with no fcntl (verify.go).
	NoAtime bool
	// ReadOnly says the descriptor asked about is open for reading only.
	// With NoAtime, a scan this open starts judges that descriptor
	// itself (passed to clamd as it is: it reads nothing a reopen would
	// not, changes no access time, and writes nothing) instead of one
	// opened again for the scan (reopen), as long as the open waits for
	// the verdict (see lead).
	ReadOnly bool
	// Into, when not nil, is asked by this open's own scan (lead) for a
	// buffer of exactly the file's size when the gate verifies the
	// contents of files of that size (verify.go): the contents read for
	// their digest under the lease clamd's scan is made under (lease.go),
	// or else, once clamd judged the file clean, the private copy it
	// judged (snapshot), are read into it, and Decision.Held then says
	// that it holds exactly the bytes judged clean, those whose digest is
	// Decision.Sum. The filesystem hands
	// them to the kernel's page cache (fs/stock.go) instead of reading
	// them again for the opener.
	Into Holder
}

// Holder gives an open's scan the buffer for the contents it judged (see
// Opener.Into): Hold returns one of exactly size bytes, or nil for none.
// It is called in the opener's goroutine, before the open is decided,
// and may be called again (a rescan); the buffer of the last call is the
// one Decision.Held speaks of.
type Holder interface {
	Hold(size int64) []byte
}

// Reason says why a Decision went the way it did.
type Reason string

const (
	ReasonEmpty     Reason = "empty"     // nothing to scan
	ReasonClean     Reason = "clean"     // scanned or cached clean
	ReasonInfected  Reason = "infected"  // clamd found a signature
	ReasonOversize  Reason = "oversize"  // larger than max_size or clamd's limit
	ReasonError     Reason = "error"     // no verdict: clamd down, timeout, garbage...
	ReasonUnstable  Reason = "unstable"  // the file kept changing while scanned
	ReasonCancelled Reason = "cancelled" // the opener gave up
	// Opens allowed in spite of the verdict (allow.go) or without asking
	// for one (openers.go).
	ReasonAuditInfected    Reason = "audit-infected"    // infected; allowed in audit mode
	ReasonAuditError       Reason = "audit-error"       // no verdict; allowed in audit mode
	ReasonAuditOversize    Reason = "audit-oversize"    // too large; allowed in audit mode
	ReasonAuditUnstable    Reason = "audit-unstable"    // kept changing; allowed in audit mode
	ReasonAllowedSHA256    Reason = "allowed-sha256"    // infected; its SHA-256 is in the allow list
	ReasonAllowedSignature Reason = "allowed-signature" // infected; its signature is in the allow list
	ReasonExcludedUID      Reason = "excluded-uid"      // opened by a user who skips the scan
	ReasonExcludedExe      Reason = "excluded-exe"      // opened by a program that skips the scan
)

// Decision is the answer to one open.
type Decision struct {
	Allow   bool
	Reason  Reason
	Cached  bool    // decided from the cache, no scan
	Verdict Verdict // when scanned or cached
	Key     Key     // the file state the decision was made for, when clean or infected
	// Sum is the digest of the contents judged, when the Gate verifies
	// the contents of files of that size (verify.go); else 0. The
	// filesystem checks the bytes it serves against it (fs/served.go).
	Sum uint64
	// Held says that the buffer Opener.Into gave holds exactly the
	// contents judged clean, of state Key, whose digest is Sum.
	Held bool
	Err  error // when Reason is error, oversize (from clamd) or unstable
}

// ErrUnstable means the file changed during every scan attempt.
var ErrUnstable = errors.New("file changed during the scan")

// errSuperseded ends a scan after a write whose file was written through
// the mount again (Modified), or scanned after a write anew (Prescan): it
// judges a state that is gone. It is no verdict and no failure: opens that
// shared that scan look at the file again (check), and nothing is cached.
var errSuperseded = errors.New("scan after write cancelled: written again")

// maxAttempts bounds rescans of a file that keeps changing; the deadline
// bounds them too.
const maxAttempts = 20

// Stats are counters for tests and metrics.
type Stats struct {
	Hits, Misses, Scans, ScanErrors, Infected, Denied uint64
	// Changed counts cached verdicts not used because the file's contents
	// were no longer those judged (verify.go); Racy, verdicts not cached
	// because the file's times were too recent (racy.go); Uncached,
	// decisions asked of CheckUncached.
	Changed, Racy, Uncached uint64
	// Excluded counts opens that skipped the scan because of who opened
	// (openers.go); Suppressed, log lines left out as repeats (repeat.go).
	Excluded, Suppressed uint64
	// Restored counts verdicts loaded from a state file, StateSaves the
	// state files written, StateSaveErrors the failures to (state.go).
	Restored, StateSaves, StateSaveErrors uint64
	// Prescans counts the scans after a write started (Prescan), at
	// once or from the queue; PrescansQueued, those that waited in the
	// queue because maxPrescans ran already; PrescansDropped, those
	// thrown out of a full queue, oldest first (the next open of such
	// a file scans it). See prescan.go.
	Prescans, PrescansQueued, PrescansDropped uint64
	// Carried counts verdicts of files not verified carried over a
	// change of their metadata made through the mount (carry.go).
	Carried uint64
}

// Gate decides whether an open may read a file: from the cache of verdicts
// when the file's state is known, otherwise by one shared scan of that
// state. Concurrent opens of one state share one scan (flights), and
// at most MaxConcurrent scans run at once (a semaphore), with no lock held
// on the read path.
type Gate struct {
	opts    Options
	scanner Scanner
	lru     *LRU
	log     *slog.Logger
	sf      flights // one scan per state at once (flights.go)
	slots   *slots  // one per scan in flight (slots.go)
	db      atomic.Pointer[string]
	policy  atomic.Pointer[Policy] // see SetPolicy
	fresh   freshness              // see Invalidate
	writes  *writeGens             // see Modified
	windows timeWindows            // see SetTimeGranularity
	repeats repeats                // lines that repeat (repeat.go)
	state   restore                // a state file waiting for the database version (state.go)

	prescans atomic.Int64 // scans after a write not over: running, or queued (prescan.go)
	passedOn atomic.Int64 // scans of dead openers going on without them (lead), at most passOnMax()
	demand   demand       // scans opens wait for; Prewarm waits for none (prewarm.go)
	hooks    testHooks    // nil outside this package's tests

	pendMu   sync.Mutex         // guards pending, running and queue; a leaf
	pending  map[inode]*prescan // scans after a write running, by file (see Modified)
	running  int                // scans after a write running, each with its goroutine
	queue    prescanQueue       // scans after a write waiting for one of those (prescan.go)
	runMax   int                // bound on running (maxPrescans; tests lower it)
	queueMax int                // bound on queue (maxQueued; tests lower it)

	hits, misses, scans, scanErrors, infected, denied atomic.Uint64
	changed, racies, uncached                         atomic.Uint64
	excluded, restored                                atomic.Uint64
	carried                                           atomic.Uint64 // verdicts carried over a change of metadata (carry.go)
	carrying                                          chan struct{} // carries waiting in a goroutine of their own, at most carryMax
	prescanned, prescansQueued, prescansDropped       atomic.Uint64
}

// NewGate returns a Gate that scans with s.
func NewGate(s Scanner, opts Options) *Gate {
	if opts.MaxConcurrent < 1 {
		opts.MaxConcurrent = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gate{
		opts:     opts,
		scanner:  s,
		lru:      NewLRU(opts.MaxEntries, opts.TTL),
		log:      opts.Logger,
		slots:    newSlots(opts.MaxConcurrent),
		pending:  map[inode]*prescan{},
		queue:    prescanQueue{byID: map[inode]*queued{}},
		writes:   newWriteGens(),
		carrying: make(chan struct{}, carryMax),
		runMax:   maxPrescans,
		queueMax: maxQueued,
	}
	empty := ""
	g.db.Store(&empty)
	g.policy.Store(&Policy{MaxSize: opts.MaxSize, AllowOversize: opts.AllowOversize, AllowOnError: opts.AllowOnError})
	return g
}

// SetDatabase records the signature database version clamd runs; verdicts
// made under another version no longer match.
func (g *Gate) SetDatabase(version string) {
	g.db.Store(&version)
	if version != "" {
		g.restorePending() // a state file read before the version was known
	}
}

// Database is the version set by SetDatabase.
func (g *Gate) Database() string { return *g.db.Load() }

// Cache exposes the verdict cache (for stats and purges).
func (g *Gate) Cache() *LRU { return g.lru }

// Stats returns a snapshot of the counters.
func (g *Gate) Stats() Stats {
	return Stats{
		Hits: g.hits.Load(), Misses: g.misses.Load(), Scans: g.scans.Load(),
		ScanErrors: g.scanErrors.Load(), Infected: g.infected.Load(), Denied: g.denied.Load(),
		Changed: g.changed.Load(), Racy: g.racies.Load(), Uncached: g.uncached.Load(),
		Excluded: g.excluded.Load(), Suppressed: g.repeats.suppressed.Load(), Restored: g.restored.Load(),
		StateSaves: g.state.saves.Load(), StateSaveErrors: g.state.failed.Load(),
		Prescans: g.prescanned.Load(), PrescansQueued: g.prescansQueued.Load(), PrescansDropped: g.prescansDropped.Load(),
		Carried: g.carried.Load(),
	}
}

// KeyOf builds the cache key of a file state under database db.
func KeyOf(st *unix.Stat_t, db string) Key {
	return Key{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(), DB: db,
	}
}

type outcome struct {
	verdict Verdict
	err     error
}

// Check decides whether who may read f. f is the descriptor that will serve
// the reads: the scan reads that same open file, and its state is checked
// again after the scan.
func (g *Gate) Check(ctx context.Context, f *os.File, who Opener) Decision {
	return g.decide(ctx, f, who, false)
}

// CheckUncached is Check for a file that another process has open for
// writing through the mount: it is never decided from the cache, but by
// a scan of the file as it is now (which may be shared with opens of the
// same state, and whose verdict is cached as usual). The filesystem first
// has the kernel write that writer's dirty pages back.
func (g *Gate) CheckUncached(ctx context.Context, f *os.File, who Opener) Decision {
	g.uncached.Add(1)
	return g.decide(ctx, f, who, true)
}

func (g *Gate) decide(ctx context.Context, f *os.File, who Opener, uncached bool) Decision {
	p := g.pol()
	if r, ok := g.excludedOpener(p, who); ok {
		// Neither asked of nor told to the cache: what this opener reads
		// stays unjudged for everyone else.
		g.excluded.Add(1)
		d := Decision{Allow: true, Reason: r}
		g.report(p, d, who)
		return d
	}
	d := allowances(p, g.check(ctx, f, who.Uid, who.Stat, who.NoAtime, who.NoAtime && who.ReadOnly, uncached, who.Into))
	if d.Reason != ReasonClean {
		d.Held = false
	}
	g.report(p, d, who)
	if !d.Allow {
		g.denied.Add(1)
	}
	return d
}

func (g *Gate) check(ctx context.Context, f *os.File, uid uint32, seen *unix.Stat_t, noatime, direct, uncached bool, into Holder) Decision {
	// The open's own bound on its wait, from its first miss on: a scan it
	// joined may end superseded (errSuperseded), and it then waits for
	// another one, or runs one itself.
	var until time.Time
	var deadline <-chan time.Time
	var missed Key // the state the opener's fstat showed, not found
	again := false // this pass follows that miss
	for {
		var st unix.Stat_t
		since := time.Now().UnixNano()
		// The opener's fstat (seen) serves the first lookup only: a scan
		// needs an fstat made at or after since (racy.go).
		fresh := seen == nil || uncached
		if fresh {
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				return g.onError(fmt.Errorf("fstat: %w", err))
			}
		} else {
			st, seen = *seen, nil
		}
		switch g.judge(&st) {
		case nothingToScan:
			return Decision{Allow: true, Reason: ReasonEmpty}
		case tooLarge:
			d := g.onOversize(fmt.Errorf("%d bytes is over max_size %d", st.Size, g.pol().MaxSize))
			d.Key = g.keyOf(&st)
			return d
		}
		key := g.keyOf(&st)
		if !uncached && !(again && key == missed) {
			if v, sum, ok := g.lookup(key, f, noatime); ok {
				g.hits.Add(1)
				return g.fromVerdict(key, judged{v, sum}, true)
			}
		}
		again = false
		if !fresh {
			// A miss: fstat now, then scan; the same state is not
			// looked up (nor its contents read) twice.
			missed, again = key, true
			continue
		}
		if until.IsZero() {
			until = time.Now().Add(g.opts.Timeout + time.Second)
		}

		// The opener starts the scan of key and runs it itself (lead),
		// or joins the one running and waits for it; either way with no
		// goroutine between it and the scan, since each hand-off costs
		// a wake-up on a busy machine.
		g.demand.add()
		flight, ours := g.sf.join(key)
		held := false
		// The miss is counted once this open has started the scan of
		// key or joined the one running: a count of n misses means n
		// opens wait on scans (and are counted in demand).
		g.misses.Add(1)
		if ours {
			var waited bool
			if waited, held = g.lead(ctx, flight, f, uid, direct, until, key, since, into); !waited {
				return Decision{Reason: ReasonCancelled, Err: ctx.Err()}
			}
		} else {
			if deadline == nil {
				timer := time.NewTimer(time.Until(until))
				defer timer.Stop()
				deadline = timer.C
			}
			// A follower holds nothing of the scan's: when it leaves,
			// the scan goes on for the others, and it waits for no scan.
			select {
			case <-flight.done:
				g.demand.done()
			case <-ctx.Done():
				g.demand.done()
				return Decision{Reason: ReasonCancelled, Err: ctx.Err()}
			case <-deadline:
				g.demand.done()
				return g.onError(fmt.Errorf("%w: no verdict within %v", clamav.ErrTimeout, g.opts.Timeout))
			}
		}
		if r := flight; r.err != nil {
			if errors.Is(r.err, errSuperseded) {
				// A scan after a write, joined and then cancelled
				// because the file was written again: look again.
				continue
			}
			if errors.Is(r.err, clamav.ErrSizeLimit) {
				d := g.onOversize(r.err)
				d.Key = key
				return d
			}
			if errors.Is(r.err, ErrUnstable) {
				return Decision{Reason: ReasonUnstable, Err: r.err}
			}
			return g.onError(r.err)
		}
		d := g.fromVerdict(key, flight.val.(judged), false)
		d.Held = held && d.Reason == ReasonClean
		return d
	}
}

// errLeft ends an open's scan at the opener's leaving (see lead): no
// verdict, and no failure either.
var errLeft = errors.New("cache: the opener left before the verdict")

// lead runs the scan of key's state, the flight fl this open started, in the opener's goroutine, under the open's context ctx and
// bounded by clamd.timeout and until (the open's own bound); the opens
// of that state meanwhile join fl and wait for it. The scan judges f
// itself when direct (Opener.ReadOnly), else a descriptor of its own
// (reopen), closed when the scan is over.
//
// It reports whether the open waited for the end of the scan. It did not
// when the opener left first (ctx done: the opener is dying), which the
// scan sees at its next wait, for a scan slot or for clamd's reply: it
// then stops waiting, at once (an exchange with clamd cut short so is
// never used again: its connection is closed), and passes the scan on to
// a goroutine of its own, with a descriptor of its own and the same
// deadline, which goes on where it stopped (sending the file to clamd
// again, when it stopped waiting for the reply) and ends fl: the opens
// that joined it, and the cache, still get its verdict. The opener's
// descriptor f may be closed as soon as lead returns.
//
// into, when not nil, gives the buffer for the contents judged (see
// Opener.Into); held reports that it holds exactly the contents of key's
// state that the verdict fl ends with judged (no rescan of a later state).
// The scan passed on never uses into: it belongs to the opener.
func (g *Gate) lead(ctx context.Context, fl *flight, f *os.File, uid uint32, direct bool, until time.Time, key Key, since int64, into Holder) (waited, held bool) {
	d := time.Now().Add(g.opts.Timeout)
	if until.Before(d) {
		d = until
	}
	src := f
	waited = true
	abandoned := false // the opener left and its scan ended (too many passed on)
	defer func() {
		if waited {
			if src != f {
				src.Close()
			}
			g.demand.done()
		}
	}()
	if g.verifies(key.Size) {
		// Read whole for its digest before clamd sees it (attempts):
		// the disk starts on it now, while the scan is made ready.
		unix.Fadvise(int(f.Fd()), 0, key.Size, unix.FADV_WILLNEED)
	}
	if !direct {
		var err error
		if src, err = reopen(f); err != nil {
			src = f
			g.sf.end(key, fl, nil, fmt.Errorf("%w: %v", clamav.ErrRead, err))
			return true, false
		}
	}
	at := attempt{key: key, since: since, into: into, uid: uid}
	g.sf.lead(key, fl, func() (any, error, bool) {
		sctx, cancel := context.WithDeadline(ctx, d)
		j, err := g.attempts(sctx, ctx, src, &at, false)
		cancel()
		if !errors.Is(err, errLeft) {
			return j, err, false
		}
		if g.passedOn.Add(1) > g.passOnMax() {
			// Too many scans go on for dead openers already, each with
			// a descriptor, which no quota counts any more: a user
			// killing openers in a loop would use up clamfuse's. This
			// one ends here; the opens that joined it look again, and
			// one of them scans anew.
			g.passedOn.Add(-1)
			abandoned = true
			return judged{}, errSuperseded, false
		}
		own := src
		if own == f {
			// The opener closes f once lead returns.
			if own, err = reopen(f); err != nil {
				g.passedOn.Add(-1)
				return judged{}, fmt.Errorf("%w: %v", clamav.ErrRead, err), false
			}
		}
		waited = false
		at.into, at.held = nil, false
		go func() {
			defer g.passedOn.Add(-1)
			defer g.demand.done()
			defer own.Close()
			g.sf.run(key, fl, func() (any, error) {
				bctx, cancel := context.WithDeadline(context.Background(), d)
				defer cancel()
				return g.attempts(bctx, nil, own, &at, false)
			})
		}()
		return nil, nil, true
	})
	waited = waited && !abandoned
	return waited, waited && at.held && at.key == key
}

// passOnMax bounds the scans of dead openers going on at once (lead):
// four for each scan clamd may run at once.
func (g *Gate) passOnMax() int64 { return 4 * int64(g.opts.MaxConcurrent) }

// scan runs on behalf of every opener of this state, under ctx and its
// own deadline (clamd.timeout); a scan after a write is cancelled when it
// is superseded (Modified), and then returns errSuperseded. file is the
// Gate's own descriptor (see reopen); scan does not close it. key is the
// state of file taken by an fstat made at or after since (Unix ns; see
// racy). held: the caller took a slot for the first attempt (a background
// scan, see settle). uid is whose scan it is (the writer's; root for
// prewarm), for the turns at the scan slots of its later attempts.
func (g *Gate) scan(ctx context.Context, file *os.File, uid uint32, key Key, since int64, held bool) (judged, error) {
	ctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	return g.attempts(ctx, nil, file, &attempt{key: key, since: since, uid: uid}, held)
}

// attempt is where a scan is: the state it judges, taken by an fstat made
// at or after since (Unix ns; see racy); and, for an open's own scan, the
// buffer for the contents judged (Opener.Into), and whether the verdict
// attempts returned judged exactly the bytes in it.
type attempt struct {
	key   Key
	since int64
	into  Holder
	held  bool
	copy  bool   // clamd judges a private copy, never the file under a lease (lease.go)
	uid   uint32 // whose scan it is, for its turn at the scan slots (slots.go)
}

// attempts scans file, in the state at, under ctx, until a verdict (or
// ErrUnstable, or an error). When leader is not nil (an open's own scan,
// see lead) and done, it returns errLeft at its next wait, for a scan
// slot or for clamd, or before its next attempt; at then says where to
// go on.
//
// The verdict is cached when the state after the scan is at.key and, for
// a file whose contents are verified, the contents are those before the
// scan, and the state is not racy; else the file is scanned again (a
// change), or the verdict is only returned (racy).
func (g *Gate) attempts(ctx, leader context.Context, file *os.File, at *attempt, held bool) (judged, error) {
	// held: the caller took a slot for the first attempt (a background
	// scan, see settle); it is given back on every way out before that
	// attempt uses it.
	defer func() {
		if held {
			g.slots.release()
		}
	}()
	superseded := func() bool { return errors.Is(context.Cause(ctx), errSuperseded) }
	left := func() bool { return leader != nil && leader.Err() != nil }
	for range maxAttempts {
		at.held = false
		if superseded() {
			return judged{}, errSuperseded
		}
		if left() {
			return judged{}, errLeft
		}
		key := at.key
		if maxSize := g.pol().MaxSize; key.Size > maxSize && maxSize > 0 {
			return judged{}, fmt.Errorf("%w: grew to %d bytes", clamav.ErrSizeLimit, key.Size)
		}
		if held {
			held = false
		} else if !g.acquire(ctx, at.uid) {
			if superseded() {
				return judged{}, errSuperseded
			}
			if left() {
				return judged{}, errLeft
			}
			g.scanErrors.Add(1)
			return judged{}, fmt.Errorf("%w: waiting for a scan slot for %v", clamav.ErrTimeout, g.opts.Timeout)
		}
		g.scans.Add(1)
		var sum uint64
		// What clamd judges: for a file whose contents are verified,
		// the file itself under a read lease that shows nobody can write
		// it (lease.go), or else a private copy of them (snapshot), and
		// sum is their digest; for any other file, the very descriptor
		// checked below, passed to clamd or read.
		scanned, snap, leased := file, (*os.File)(nil), false
		var buf []byte // the opener's buffer for the bytes judged, read under the lease
		if g.verifies(key.Size) {
			var err error
			if !at.copy && lease(file, key.Dev) {
				leased = true
				if at.into != nil {
					buf = at.into.Hold(key.Size)
				}
				if buf != nil {
					// One read for the digest and for the opener:
					// nobody can write the file until unlease.
					sum, err = readSum(file, buf)
				} else {
					sum, err = contentSum(file, key.Size)
				}
			} else {
				snap, sum, err = snapshot(file, key.Size)
			}
			if err != nil && !errors.Is(err, errShort) {
				if leased {
					unlease(file)
				}
				g.slots.release()
				g.scanErrors.Add(1)
				return judged{}, fmt.Errorf("%w: %v", clamav.ErrRead, err)
			}
			// errShort: shrunk since the fstat; the check below sees it.
			if snap != nil {
				scanned = snap
			}
		} else {
			// A file not verified keeps its times in its Key: a lease
			// that holds over the scan lets a change of its times
			// alone meanwhile (a rename, chmod or utimes of a download
			// whose scan after the write runs) keep the verdict, as
			// KeepVerdict does (carry.go), instead of a second scan.
			leased = lease(file, key.Dev)
		}
		closeSnap := func() {
			if snap != nil {
				snap.Close()
				snap = nil
			}
			if leased {
				unlease(file)
				leased = false
			}
		}
		stopPrefetch := func() {}
		if snap == nil && !g.verifies(key.Size) {
			stopPrefetch = prefetch(scanned, key.Size) // prefetch.go
		}
		res, err := g.scanner.ScanFile(ctx, scanned, key.Size)
		stopPrefetch()
		g.slots.release()
		if superseded() {
			// Whatever clamd said, it was about a state that is gone.
			closeSnap()
			return judged{}, errSuperseded
		}
		if err != nil {
			closeSnap()
			if left() {
				// Cut short: sent again by whoever goes on.
				return judged{}, errLeft
			}
			g.scanErrors.Add(1)
			return judged{}, err
		}
		var digest string
		if res.Infected {
			// Before the check below, which then covers it too: the
			// digest is of the bytes clamd judged (allow.go).
			if digest, err = sha256Of(scanned, key.Size); err != nil && !errors.Is(err, errShort) {
				closeSnap()
				g.scanErrors.Add(1)
				return judged{}, fmt.Errorf("%w: %v", clamav.ErrRead, err)
			}
		}
		var st unix.Stat_t
		after := time.Now().UnixNano()
		if err := unix.Fstat(int(file.Fd()), &st); err != nil {
			closeSnap()
			return judged{}, fmt.Errorf("%w: fstat: %v", clamav.ErrRead, err)
		}
		now := g.keyOf(&st)
		if leased && sum == 0 {
			// Nobody could write the file from the lease on until this
			// fstat: the contents are the ones clamd judged, and the
			// state now is theirs, racy or not from this fstat on
			// (racy.go), whatever a change of the times alone made of
			// it meanwhile (carry.go): a rename, chmod or utimes
			// keeps the verdict, and a rename made right after the
			// writer's close lets the scan after the write be cached.
			leased = false
			if unlease(file) && (now == key || onlyTimes(key, now)) {
				key, at.key, at.since = now, now, after
			}
		}
		if now != key {
			// The bytes may not be the ones scanned, or the database
			// changed under the scan (see Invalidate): scan again.
			closeSnap()
			at.key, at.since = now, after
			if st.Size == 0 {
				return judged{}, nil
			}
			continue
		}
		if sum != 0 {
			if leased {
				// Nobody could write the file from the digest on while
				// the lease held: the bytes read for the digest (into
				// buf, if any) are those judged, handed over to the
				// opener once it shows it held.
				at.held = buf != nil && !res.Infected
				leased = false
				if !unlease(file) {
					// Broken: someone opened the file for writing
					// meanwhile. Scan again, on a copy, so that
					// breaking leases cannot keep a scan from ending.
					closeSnap()
					at.held, at.copy, at.since = false, true, after
					continue
				}
			} else {
				buf = nil
				if at.into != nil && !res.Infected {
					buf = at.into.Hold(key.Size)
				}
				again, err := contentSum(file, key.Size)
				if err != nil || again != sum {
					// Changed under the scan without a trace in the
					// key (see verify.go): scan again.
					closeSnap()
					at.since = after
					continue
				}
				// The copy clamd judged holds the bytes whose digest
				// is sum, the file's in state key: handed over to the
				// opener.
				at.held = readJudged(snap, buf, key.Size)
			}
		}
		closeSnap()
		v := Verdict{Infected: res.Infected, Signature: res.Signature, Backend: res.Backend, SHA256: digest}
		if v.Backend == "" {
			v.Backend = g.scanner.String()
		}
		switch {
		case sum == 0 && g.racy(&st, at.since):
			// A change made now could keep this key (see racy.go); a
			// verdict whose contents are verified (sum) is used only
			// while the file holds them, which catches that change too.
			g.racies.Add(1)
		case g.caching():
			// A verdict put under a key whose generation has passed
			// meanwhile is never found again.
			g.lru.PutSum(g.cacheKey(key), v, sum)
		}
		return judged{v, sum}, nil
	}
	return judged{}, ErrUnstable
}

// judged is what a scan found: the verdict, and the digest of the
// contents it judged (0 when they are not verified).
type judged struct {
	v   Verdict
	sum uint64
}

// acquire takes a scan slot for an open's scan (or prewarm's) of user
// uid's, waiting for one until ctx is done; it reports whether it got one.
func (g *Gate) acquire(ctx context.Context, uid uint32) bool {
	return g.slots.acquire(ctx, uid, false, g.hooks.slotWait)
}

// testHooks let this package's tests see a goroutine reach a state that
// nothing else shows, instead of sleeping and hoping it did. They are nil
// outside those tests, and cost a nil check.
type testHooks struct {
	slotWait   func() // a scan found every scan slot taken, and waits for one
	bgSlotWait func() // a scan after a write found every scan slot taken, and waits for one
	bgSlotHeld func() // a scan after a write took its slot, before it starts or joins a flight
	idleWait   func() // Prewarm waits: for the opens' scans, or a reload window
	carried    func() // a verdict was carried over a change of metadata (carry.go)
}

// fromVerdict turns a verdict into a decision. key is the state the opener
// saw; a rescan may have judged a later state, which then simply does not
// match key on the next open.
func (g *Gate) fromVerdict(key Key, j judged, cached bool) Decision {
	if j.v.Infected {
		g.infected.Add(1)
		return Decision{Reason: ReasonInfected, Verdict: j.v, Cached: cached, Key: key}
	}
	return Decision{Allow: true, Reason: ReasonClean, Verdict: j.v, Cached: cached, Key: key, Sum: j.sum}
}

// What a file state asks of the gate.
const (
	toScan        = iota
	nothingToScan // not a regular file, or empty
	tooLarge      // over max_size: not streamed
)

// judge says whether st holds bytes to scan: the one rule for opens
// (check) and for scans ahead of them (Prescan, Prewarm).
func (g *Gate) judge(st *unix.Stat_t) int {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 {
		return nothingToScan
	}
	if maxSize := g.pol().MaxSize; maxSize > 0 && st.Size > maxSize {
		return tooLarge
	}
	return toScan
}

func (g *Gate) onOversize(err error) Decision {
	return Decision{Allow: g.pol().AllowOversize, Reason: ReasonOversize, Err: err}
}

func (g *Gate) onError(err error) Decision {
	return Decision{Allow: g.pol().AllowOnError, Reason: ReasonError, Err: err}
}

// report logs every denial, every open allowed without a clean verdict
// (by policy, in audit mode, by an allow list), with who asked; opens
// decided clean, empty or by who asked only at debug. A line that repeats
// is logged once per interval, with a count (repeat.go).
func (g *Gate) report(p *Policy, d Decision, who Opener) {
	quiet := d.Allow && (d.Reason == ReasonClean || d.Reason == ReasonEmpty ||
		d.Reason == ReasonExcludedUID || d.Reason == ReasonExcludedExe) || d.Reason == ReasonCancelled
	if quiet && !g.log.Enabled(context.Background(), slog.LevelDebug) {
		return // the hot path: a clean open with debug logging off
	}
	attrs := []any{slog.String("path", who.Path), slog.Uint64("pid", uint64(who.Pid)), slog.Uint64("uid", uint64(who.Uid))}
	var msg string
	switch d.Reason {
	case ReasonInfected:
		msg = "infected file denied"
	case ReasonAuditInfected:
		msg = "infected file allowed (audit mode)"
	case ReasonAllowedSHA256:
		msg = "infected file allowed by scan.allow_sha256"
	case ReasonAllowedSignature:
		msg = "infected file allowed by scan.allow_signatures"
	case ReasonAuditError, ReasonAuditOversize, ReasonAuditUnstable:
		msg = "file allowed without a verdict (audit mode)"
	case ReasonCancelled:
		g.log.Debug("open interrupted while scanning", attrs...)
		return
	case ReasonExcludedUID, ReasonExcludedExe:
		g.log.Debug("open by an excluded opener, not scanned", append(attrs, slog.String("reason", string(d.Reason)))...)
		return
	default:
		switch {
		case d.Allow && (d.Reason == ReasonOversize || d.Reason == ReasonError):
			msg = "file not scanned, allowed by policy"
		case !d.Allow:
			msg = "file denied without a verdict"
		default:
			g.log.Debug("open allowed", append(attrs, slog.String("reason", string(d.Reason)), slog.Bool("cached", d.Cached))...)
			return
		}
	}
	k := repeatKey{msg: msg}
	if d.Verdict.Infected {
		attrs = append(attrs, slog.String("signature", d.Verdict.Signature), slog.String("sha256", d.Verdict.SHA256),
			slog.Bool("cached", d.Cached), slog.String("clamd", d.Verdict.Backend))
	} else {
		attrs = append(attrs, slog.String("reason", string(d.Reason)), slog.Any("err", d.Err))
		// No verdict: a file state when there is one (over max_size),
		// else the kind of error, whatever the file.
		k.kind = string(d.Reason) + "/" + clamav.ErrorKind(d.Err)
	}
	if d.Key != (Key{}) {
		k.kind, k.file = string(d.Reason), fileKeyOf(&d.Key)
	}
	g.repeats.log(g.log, p.LogRepeat, slog.LevelWarn, k, msg, attrs)
}

// reopen opens the inode behind f again for reading through /proc, so
// it is the same file whatever happened to its name, with O_NOATIME when
// allowed so that scanning leaves the file's times as a plain open would;
// read-only either way, so that clamd gets no descriptor it could write
// through; only when that cannot be done, it duplicates f. It must be
// called before f may be closed.
func reopen(f *os.File) (*os.File, error) {
	fd, err := openAgain(f)
	if err != nil {
		fd, err = unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// openAgain opens the inode behind f again, read-only, through /proc,
// with O_NOATIME when allowed: a new open file, with its own offset and
// readahead.
func openAgain(f *os.File) (int, error) {
	p := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err == unix.EPERM {
		// O_NOATIME: neither the owner nor CAP_FOWNER.
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	return fd, err
}
