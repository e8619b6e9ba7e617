package clamav

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pool spreads scans over several clamd backends and fails over between
// them. It is what the gate scans with, even for a single clamd: it also
// polls each backend with VERSION, which is both the health check and how
// the signature database version is learnt (see Database).
//
// Scan and ScanFile pick the healthy backend with the fewest scans in
// flight (round robin among equals). On a failure that is no verdict
// (ErrUnavailable, ErrTimeout, ErrProtocol, and ErrClamd: an "... ERROR"
// reply, such as the "PROTOCOL ERROR" a clamd being stopped sends
// mid-stream) they retry the scan once on another backend (Scan rewinds
// its reader, which must then be an io.ReadSeeker); a verdict (FOUND), a
// size limit (the other clamd has the same one, most likely) or a read
// error are final. With every backend down they still try them, so a
// clamd that comes back serves at once. ScanFile uses each backend's own
// Transport.
//
// Lock order: Pool.mu, then backend.mu.
type Pool struct {
	log      *slog.Logger
	onChange func(Change)
	interval atomic.Int64 // time.Duration between check rounds

	mu       sync.Mutex                 // guards backends (the slice; see backend for its fields) and db
	backends atomic.Pointer[[]*backend] // written under mu, read without it
	db       string                     // Database() after the last round

	rr      atomic.Uint64 // round-robin start
	checkMu sync.Mutex    // serializes check rounds
	kick    chan struct{} // asks the checker for a round now
	stop    chan struct{}
	done    chan struct{}
	started atomic.Bool
	closed  sync.Once
}

// PoolOptions configure a Pool.
type PoolOptions struct {
	CheckInterval time.Duration // between VERSION checks of each backend; default 10s
	Logger        *slog.Logger
	// OnChange, if set, is called after a check round that changed the
	// Database string, from the checking goroutine, never concurrently
	// with itself.
	OnChange func(Change)
}

// Change is what OnChange is told.
type Change struct {
	Database, Old string // Database() after and before the round
}

// backend is one clamd of a Pool.
type backend struct {
	client   *Client
	inflight atomic.Int64
	fellBack atomic.Bool // its client's Transport fell back to INSTREAM (logged)

	mu      sync.Mutex // guards the fields below
	up      bool
	checked bool   // at least one check round has run
	version string // last VERSION answered, kept while down
	lastErr error
	scans   uint64
	errs    map[string]uint64 // by ErrorKind
}

// BackendStatus is a snapshot of one backend, for logs and metrics.
type BackendStatus struct {
	Address   string    // Client.String()
	Transport Transport // Client.Transport(): how ScanFile reaches it now
	Up        bool      // the last check or scan reached it
	Version   string    // last VERSION reply, "" if never reached
	Inflight  int64
	Scans     uint64            // scans sent to it, whatever the outcome
	Errors    map[string]uint64 // failed scans and checks by ErrorKind
	LastErr   error
}

// NewPool returns a Pool over clients, in that order of preference for
// ties. It does not contact clamd: Check runs a round now, and Start the
// periodic checks.
func NewPool(clients []*Client, opts PoolOptions) (*Pool, error) {
	if len(clients) == 0 {
		return nil, errors.New("clamav: a pool needs at least one clamd")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		log:      opts.Logger,
		onChange: opts.OnChange,
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	p.SetCheckInterval(opts.CheckInterval)
	bs := newBackends(clients, nil)
	p.backends.Store(&bs)
	return p, nil
}

// newBackends makes the backends of clients, keeping those of old with
// the same address and configured transport.
func newBackends(clients []*Client, old []*backend) []*backend {
	type id struct {
		name      string
		transport Transport
	}
	byID := map[id]*backend{}
	for _, b := range old {
		byID[id{b.client.String(), b.client.transport}] = b
	}
	bs := make([]*backend, 0, len(clients))
	for _, c := range clients {
		if b, ok := byID[id{c.String(), c.transport}]; ok {
			bs = append(bs, b) // keep its state and counters
			continue
		}
		bs = append(bs, &backend{client: c, errs: map[string]uint64{}})
	}
	return bs
}

// SetBackends replaces the backends. One whose address and transport are
// unchanged keeps its state (and its Client); new ones are checked at
// once. Scans in flight on a removed backend finish there.
func (p *Pool) SetBackends(clients []*Client) error {
	if len(clients) == 0 {
		return errors.New("clamav: a pool needs at least one clamd")
	}
	p.mu.Lock()
	bs := newBackends(clients, *p.backends.Load())
	p.backends.Store(&bs)
	p.mu.Unlock()
	p.Kick()
	return nil
}

// SetCheckInterval changes the time between check rounds (default 10s for
// d <= 0); it takes effect after the next round.
func (p *Pool) SetCheckInterval(d time.Duration) {
	if d <= 0 {
		d = 10 * time.Second
	}
	p.interval.Store(int64(d))
}

// String lists the backends: "unix:/a.sock" or "unix:/a.sock, tcp://h:3310".
func (p *Pool) String() string {
	bs := *p.backends.Load()
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.client.String()
	}
	return strings.Join(names, ", ")
}

// Database is the signature database the pool scans with, for cache keys:
// the distinct VERSION replies last seen from its backends, in backend
// order, joined with " | ". A backend that is down keeps its last version,
// so failing over does not make cached verdicts stale, but a backend with
// another database does. It is "" until a backend has answered.
func (p *Pool) Database() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.db
}

func (p *Pool) databaseLocked() string {
	var vs []string
	seen := map[string]bool{}
	for _, b := range *p.backends.Load() {
		b.mu.Lock()
		v := b.version
		b.mu.Unlock()
		if v != "" && !seen[v] {
			seen[v] = true
			vs = append(vs, v)
		}
	}
	return strings.Join(vs, " | ")
}

// Status returns a snapshot of every backend.
func (p *Pool) Status() []BackendStatus {
	bs := *p.backends.Load()
	out := make([]BackendStatus, len(bs))
	for i, b := range bs {
		b.mu.Lock()
		errs := make(map[string]uint64, len(b.errs))
		for k, v := range b.errs {
			errs[k] = v
		}
		out[i] = BackendStatus{
			Address: b.client.String(), Transport: b.client.Transport(), Up: b.up, Version: b.version,
			Inflight: b.inflight.Load(), Scans: b.scans, Errors: errs, LastErr: b.lastErr,
		}
		b.mu.Unlock()
	}
	return out
}

// Start runs check rounds every check interval (and when kicked) until
// Close. Call Check first for a synchronous first round.
func (p *Pool) Start() {
	if !p.started.CompareAndSwap(false, true) {
		return
	}
	go p.loop()
}

// Close stops the periodic checks. Scans keep working.
func (p *Pool) Close() {
	p.closed.Do(func() {
		close(p.stop)
		if p.started.Load() {
			<-p.done
		}
	})
}

// Kick asks the checker for a round now, without waiting for it.
func (p *Pool) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Pool) loop() {
	defer close(p.done)
	timer := time.NewTimer(time.Duration(p.interval.Load()))
	defer timer.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-timer.C:
		case <-p.kick:
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-p.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		p.Check(ctx)
		cancel()
		timer.Stop()
		timer.Reset(time.Duration(p.interval.Load()))
	}
}

// checkTimeout bounds one VERSION check: at most 5s, at least 1s, and
// within the check interval otherwise.
func (p *Pool) checkTimeout() time.Duration {
	return min(5*time.Second, max(time.Second, time.Duration(p.interval.Load())))
}

// Check asks every backend for VERSION now, in parallel, updates their
// state, logs what changed and calls OnChange if the database did. It
// returns the number of backends up.
func (p *Pool) Check(ctx context.Context) int {
	p.checkMu.Lock()
	defer p.checkMu.Unlock()
	bs := *p.backends.Load()
	type answer struct {
		version string
		err     error
	}
	answers := make([]answer, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, p.checkTimeout())
			defer cancel()
			v, err := b.client.Version(cctx)
			answers[i] = answer{v, err}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0 // stopping: the answers say nothing of clamd
	}

	up := 0
	for i, b := range bs {
		a := answers[i]
		b.mu.Lock()
		first, wasUp, oldVersion := !b.checked, b.up, b.version
		b.checked = true
		b.up = a.err == nil
		b.lastErr = a.err
		if a.err == nil {
			b.version = a.version
		} else {
			b.errs[ErrorKind(a.err)]++
		}
		b.mu.Unlock()
		name := b.client.String()
		switch {
		case a.err == nil && first:
			p.log.Info("clamd reachable", "clamd", name, "version", a.version, "transport", string(b.client.Transport()))
		case a.err == nil && !wasUp:
			p.log.Info("clamd backend up", "clamd", name, "version", a.version)
		case a.err != nil && first:
			p.log.Warn("clamd not reachable", "clamd", name, "err", a.err)
		case a.err != nil && wasUp:
			p.log.Warn("clamd backend down", "clamd", name, "err", a.err)
		case a.err != nil:
			p.log.Debug("clamd still down", "clamd", name, "err", a.err)
		}
		if a.err == nil {
			up++
			if oldVersion != "" && oldVersion != a.version {
				p.log.Info("clamd signature database changed", "clamd", name, "old", oldVersion, "new", a.version)
			}
		}
	}

	p.mu.Lock()
	old := p.db
	p.db = p.databaseLocked()
	now := p.db
	p.mu.Unlock()
	if now != old && p.onChange != nil {
		p.onChange(Change{Database: now, Old: old})
	}
	return up
}

// Scan streams r with INSTREAM on one backend, and once more on another
// after a failure that is no verdict; see Pool. Result.Backend names the backend
// that judged r.
func (p *Pool) Scan(ctx context.Context, r io.Reader) (Result, error) {
	rs, seekable := r.(io.ReadSeeker)
	var start int64
	if seekable {
		var err error
		if start, err = rs.Seek(0, io.SeekCurrent); err != nil {
			seekable = false
		}
	}
	rewind := func() error {
		if !seekable {
			return errors.New("the input cannot be rewound")
		}
		if _, err := rs.Seek(start, io.SeekStart); err != nil {
			return fmt.Errorf("rewinding the input: %v", err)
		}
		return nil
	}
	return p.scan(ctx, func(c *Client) (Result, error) { return c.Scan(ctx, r) }, rewind)
}

// ScanFile judges f, whose size the caller saw as size, on one backend
// with that backend's Transport, and once more on another after a
// failure that is no verdict; see Pool and Client.ScanFile. f is read from offset
// 0 each time, so nothing needs rewinding. Result.Backend names the
// backend that judged f.
func (p *Pool) ScanFile(ctx context.Context, f *os.File, size int64) (Result, error) {
	return p.scan(ctx, func(c *Client) (Result, error) { return c.ScanFile(ctx, f, size) }, nil)
}

// scan runs scan on the backend pick chooses and, after a failure that is
// no verdict, once more on another. rewind, if set, readies the input for
// the second attempt; when it fails the first error stands (fail closed).
func (p *Pool) scan(ctx context.Context, scan func(*Client) (Result, error), rewind func() error) (Result, error) {
	first := p.pick(nil)
	res, err := p.scanOn(first, scan)
	if err == nil || !Retryable(err) || ctx.Err() != nil {
		return res, err
	}
	next := p.pick(first)
	if next == nil {
		return res, err
	}
	if rewind != nil {
		if rerr := rewind(); rerr != nil {
			return Result{}, fmt.Errorf("%w (not retried on %s: %v)", err, next.client, rerr)
		}
	}
	p.log.Warn("clamd failed; scanning on another", "clamd", first.client.String(), "next", next.client.String(), "err", err)
	return p.scanOn(next, scan)
}

// Retryable reports whether a scan that failed with err may be sent to
// another clamd: failures of that clamd, not verdicts, size limits or
// input errors.
func Retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, ErrRead) || errors.Is(err, ErrSizeLimit) {
		return false
	}
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrProtocol) ||
		errors.Is(err, ErrClamd)
}

func (p *Pool) scanOn(b *backend, scan func(*Client) (Result, error)) (Result, error) {
	b.inflight.Add(1)
	res, err := scan(b.client)
	b.inflight.Add(-1)
	name := b.client.String()
	if b.client.transport == TransportAuto && b.client.Transport() == TransportInstream && b.fellBack.CompareAndSwap(false, true) {
		p.log.Warn("clamd refused a file descriptor; streaming files to it (INSTREAM) from now on", "clamd", name)
	}
	b.mu.Lock()
	b.scans++
	wasUp := b.up
	if err != nil {
		kind := ErrorKind(err)
		if kind != "canceled" && kind != "read" {
			b.errs[kind]++
		}
		if errors.Is(err, ErrUnavailable) {
			b.up = false
			b.lastErr = err
		}
	}
	b.mu.Unlock()
	switch {
	case err != nil && errors.Is(err, ErrUnavailable) && wasUp:
		p.log.Warn("clamd backend down", "clamd", name, "err", err)
	case err == nil && !wasUp:
		// It answers again: a check round now marks it up and reads
		// its version (a restarted clamd may have a new database).
		p.Kick()
	}
	if err != nil {
		return Result{}, err
	}
	res.Backend = name
	return res, nil
}

// pick returns the backend for the next scan, other than not: the up
// backend with the fewest scans in flight, round robin among equals;
// else, when none is up, the next one round robin; nil if there is no
// other backend.
func (p *Pool) pick(not *backend) *backend {
	bs := *p.backends.Load()
	n := len(bs)
	start := int(p.rr.Add(1) % uint64(n))
	var best, fallback *backend
	for i := range n {
		b := bs[(start+i)%n]
		if b == not {
			continue
		}
		if fallback == nil {
			fallback = b
		}
		b.mu.Lock()
		up := b.up || !b.checked
		b.mu.Unlock()
		if up && (best == nil || b.inflight.Load() < best.inflight.Load()) {
			best = b
		}
	}
	if best != nil {
		return best
	}
	return fallback
}

// ErrorKind names the kind of a Client error, for metrics labels:
// "unavailable", "timeout", "protocol", "size_limit", "clamd", "read",
// "canceled", or "other".
func ErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	case errors.Is(err, ErrSizeLimit):
		return "size_limit"
	case errors.Is(err, ErrClamd):
		return "clamd"
	case errors.Is(err, ErrRead):
		return "read"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}
