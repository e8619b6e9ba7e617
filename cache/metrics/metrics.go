// Package metrics exposes clamfuse's counters to Prometheus at /metrics.
//
// It counts at two seams, so that neither the filesystem nor the gate
// knows about Prometheus: Metrics.Gate wraps the gate the filesystem asks
// (opens by decision and reason), Metrics.Scanner wraps the scanner the
// gate uses (scans by result, their duration, bytes judged). The
// rest is read when scraped: the gate's cache counters, each clamd
// backend's health and errors from the pool, and the detection actions.
package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/cache/actions"
	"github.com/clamfuse/clamfuse/clamav"
)

// Sources are what the scrape reads; see SetSources. Any may be nil.
type Sources struct {
	Gate    *cache.Gate
	Pool    *clamav.Pool
	Actions *actions.Runner
	// Refusals counts the calls refused for a limit on what users hold
	// (fs.Mounted.Refusals): opens past mount.max_open_per_user, opens
	// past the descriptors for open files in all, requests refused a
	// turn for what their user's waiting requests hold.
	Refusals func() (perUser, total, waiting uint64)
}

// Metrics holds clamfuse's metrics in a registry of its own.
type Metrics struct {
	reg          *prometheus.Registry
	opens        *prometheus.CounterVec
	denials      *prometheus.CounterVec
	scans        *prometheus.CounterVec
	scanDuration prometheus.Histogram
	scannedBytes prometheus.Counter
	prewarm      *prometheus.CounterVec
	src          atomic.Pointer[Sources]
}

// decisions are the (decision, reason) pairs a gate can return, created
// at zero so that rates work from the first scrape.
var decisions = []struct {
	allow  bool
	reason cache.Reason
}{
	{true, cache.ReasonEmpty}, {true, cache.ReasonClean}, {true, cache.ReasonOversize}, {true, cache.ReasonError},
	{false, cache.ReasonInfected}, {false, cache.ReasonOversize}, {false, cache.ReasonError},
	{false, cache.ReasonUnstable}, {false, cache.ReasonCancelled},
	{true, cache.ReasonAuditInfected}, {true, cache.ReasonAuditError}, {true, cache.ReasonAuditOversize},
	{true, cache.ReasonAuditUnstable}, {true, cache.ReasonAllowedSHA256}, {true, cache.ReasonAllowedSignature},
	{true, cache.ReasonExcludedUID}, {true, cache.ReasonExcludedExe},
}

// New builds the metrics. The gate is built with m.Scanner, so the
// sources come after, with SetSources.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clamfuse_opens_total",
			Help: "Opens the gate decided, by decision (allow, deny) and reason (audit-* in audit mode, allowed-* by an allow list, excluded-* by who opened).",
		}, []string{"decision", "reason"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clamfuse_denials_total",
			Help: "Opens denied, by reason (infected, error, oversize, unstable, cancelled).",
		}, []string{"reason"}),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clamfuse_scans_total",
			Help: "Scans sent to clamd, by result (clean, infected, error).",
		}, []string{"result"}),
		scanDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clamfuse_scan_duration_seconds",
			Help:    "Time clamd took to judge a file, failover included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		scannedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clamfuse_scanned_bytes_total",
			Help: "Bytes of the files clamd judged, streamed to it or read by it through the descriptor.",
		}),
		prewarm: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clamfuse_prewarm_files_total",
			Help: "Entries the prewarm walk handled, by result (clean, infected, cached, skipped, error).",
		}, []string{"result"}),
	}
	for _, r := range cache.PrewarmResults {
		m.prewarm.WithLabelValues(r.String())
	}
	for _, d := range decisions {
		m.opens.WithLabelValues(decisionLabel(d.allow), string(d.reason))
		if !d.allow {
			m.denials.WithLabelValues(string(d.reason))
		}
	}
	for _, r := range []string{"clean", "infected", "error"} {
		m.scans.WithLabelValues(r)
	}
	m.reg.MustRegister(m.opens, m.denials, m.scans, m.scanDuration, m.scannedBytes, m.prewarm,
		&collector{m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func decisionLabel(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// Prewarmed counts one entry of the prewarm walk (fs.Mounted.Prewarm's
// report).
func (m *Metrics) Prewarmed(r cache.PrewarmResult) { m.prewarm.WithLabelValues(r.String()).Inc() }

// SetSources says what the scrape reads from now on.
func (m *Metrics) SetSources(src Sources) { m.src.Store(&src) }

// Registry is where the metrics live, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// GateChecker is the gate as the filesystem sees it (fs.Gate).
type GateChecker interface {
	Check(ctx context.Context, f *os.File, who cache.Opener) cache.Decision
	CheckUncached(ctx context.Context, f *os.File, who cache.Opener) cache.Decision
	Prescan(f *os.File, who cache.Opener, again cache.Reopener)
	Modified(dev, ino uint64)
	SetTimeGranularity(dev uint64, gran time.Duration)
	KeepVerdict(st *unix.Stat_t, open func() (*os.File, error)) (done func())
}

// Gate wraps g so that every decision is counted.
func (m *Metrics) Gate(g GateChecker) GateChecker { return &countingGate{g, m} }

type countingGate struct {
	GateChecker
	m *Metrics
}

func (c *countingGate) Check(ctx context.Context, f *os.File, who cache.Opener) cache.Decision {
	return c.count(c.GateChecker.Check(ctx, f, who))
}

func (c *countingGate) CheckUncached(ctx context.Context, f *os.File, who cache.Opener) cache.Decision {
	return c.count(c.GateChecker.CheckUncached(ctx, f, who))
}

func (c *countingGate) count(d cache.Decision) cache.Decision {
	c.m.opens.WithLabelValues(decisionLabel(d.Allow), string(d.Reason)).Inc()
	if !d.Allow {
		c.m.denials.WithLabelValues(string(d.Reason)).Inc()
	}
	return d
}

// Scanner wraps s so that every scan is counted and timed.
func (m *Metrics) Scanner(s cache.Scanner) cache.Scanner { return &countingScanner{s, m} }

type countingScanner struct {
	cache.Scanner
	m *Metrics
}

func (c *countingScanner) ScanFile(ctx context.Context, f *os.File, size int64) (clamav.Result, error) {
	began := time.Now()
	res, err := c.Scanner.ScanFile(ctx, f, size)
	c.m.scanDuration.Observe(time.Since(began).Seconds())
	switch {
	case err != nil:
		c.m.scans.WithLabelValues("error").Inc()
		return res, err
	case res.Infected:
		c.m.scans.WithLabelValues("infected").Inc()
	default:
		c.m.scans.WithLabelValues("clean").Inc()
	}
	c.m.scannedBytes.Add(float64(size))
	return res, err
}

// collector reads the sources at scrape time.
type collector struct{ m *Metrics }

var (
	descHits        = prometheus.NewDesc("clamfuse_cache_hits_total", "Opens decided from the verdict cache.", nil, nil)
	descMisses      = prometheus.NewDesc("clamfuse_cache_misses_total", "Opens that found no cached verdict.", nil, nil)
	descEntries     = prometheus.NewDesc("clamfuse_cache_entries", "Verdicts in the cache.", nil, nil)
	descEvictions   = prometheus.NewDesc("clamfuse_cache_evictions_total", "Verdicts dropped to make room.", nil, nil)
	descInvalidated = prometheus.NewDesc("clamfuse_cache_invalidations_total", "Times every cached verdict was made stale (signature database changes).", nil, nil)
	descCaching     = prometheus.NewDesc("clamfuse_cache_caching", "1 when new verdicts are cached, 0 during a reload window.", nil, nil)
	descChanged     = prometheus.NewDesc("clamfuse_cache_changed_total", "Cached verdicts not used because the file's contents changed without changing its state (cache.verify_max_size).", nil, nil)
	descRacy        = prometheus.NewDesc("clamfuse_cache_racy_total", "Verdicts not cached because the file's times were too recent to tell a later change apart.", nil, nil)
	descCarried     = prometheus.NewDesc("clamfuse_cache_carried_total", "Verdicts of files over cache.verify_max_size carried over a rename, chmod, chown or utimes made through the mount, under a read lease that showed nobody wrote the file meanwhile.", nil, nil)
	descUncached    = prometheus.NewDesc("clamfuse_opens_while_written_total", "Opens for reading decided by a scan because another process had the file open for writing through the mount.", nil, nil)
	descInfected    = prometheus.NewDesc("clamfuse_infected_total", "Opens of files found infected (cached or scanned): denied, or allowed in audit mode or by an allow list.", nil, nil)
	descRestored    = prometheus.NewDesc("clamfuse_cache_restored_total", "Verdicts restored from the state file at start (cache.state_file).", nil, nil)
	descStateSaves  = prometheus.NewDesc("clamfuse_state_saves_total", "State files written (cache.state_file), by result (ok, error).", []string{"result"}, nil)
	descPrescans    = prometheus.NewDesc("clamfuse_scans_after_write_total", "Scans after the last writer's close of a file written through the mount, by result: started (at once or from the queue), queued (64 ran already: waited for a turn, without a descriptor), or dropped (the oldest out of a full queue of 16384; the next open of the file scans it).", []string{"result"}, nil)
	descRefusals    = prometheus.NewDesc("clamfuse_refusals_total", "Calls refused for a limit on what users hold, by limit: max_open_per_user (an open, EMFILE), max_open (an open, the descriptors for open files all in use: ENFILE), waiting_requests (a request, its user's requests waiting for their turn already 1024, or carrying 64 MiB of data: ENOMEM).", []string{"limit"}, nil)
	descSuppressed  = prometheus.NewDesc("clamfuse_log_suppressed_total", "Log lines left out as repeats within log.repeat_interval (each interval's count is logged).", nil, nil)
	descUp          = prometheus.NewDesc("clamfuse_clamd_up", "1 when the clamd backend answered its last check or scan.", []string{"backend"}, nil)
	descBScans      = prometheus.NewDesc("clamfuse_clamd_scans_total", "Scans sent to the clamd backend.", []string{"backend"}, nil)
	descBErrors     = prometheus.NewDesc("clamfuse_clamd_errors_total", "Failed scans and health checks of the clamd backend, by kind.", []string{"backend", "kind"}, nil)
	descInflight    = prometheus.NewDesc("clamfuse_clamd_inflight", "Scans in flight on the clamd backend.", []string{"backend"}, nil)
	descTransport   = prometheus.NewDesc("clamfuse_clamd_transport_info", "How files reach the clamd backend now: fildes (descriptor passed) or instream (streamed).", []string{"backend", "transport"}, nil)
	descDatabase    = prometheus.NewDesc("clamfuse_clamd_database_info", "The signature database the verdicts are cached under.", []string{"database"}, nil)
	descDetections  = prometheus.NewDesc("clamfuse_detections_total", "Infected file states acted on (audit lines).", nil, nil)
	descQuarantined = prometheus.NewDesc("clamfuse_quarantined_total", "Infected files moved to the quarantine.", nil, nil)
	descQFailed     = prometheus.NewDesc("clamfuse_quarantine_failures_total", "Quarantines that failed (the file stayed in place).", nil, nil)
	descCommands    = prometheus.NewDesc("clamfuse_on_infected_runs_total", "on_infected commands started.", nil, nil)
	descCmdFailed   = prometheus.NewDesc("clamfuse_on_infected_failures_total", "on_infected commands that failed, timed out or were not run.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHits, descMisses, descEntries, descEvictions, descInvalidated, descCaching,
		descChanged, descRacy, descCarried, descUncached, descRestored, descStateSaves, descSuppressed, descPrescans,
		descInfected, descUp, descBScans, descBErrors, descInflight, descTransport, descDatabase,
		descDetections, descQuarantined, descQFailed, descCommands, descCmdFailed, descRefusals} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	src := c.m.src.Load()
	if src == nil {
		return
	}
	if g := src.Gate; g != nil {
		st := g.Stats()
		counter(descHits, st.Hits)
		counter(descMisses, st.Misses)
		counter(descInfected, st.Infected)
		gauge(descEntries, float64(g.Cache().Len()))
		counter(descEvictions, g.Cache().Evictions())
		counter(descInvalidated, g.Generation())
		gauge(descCaching, b2f(g.Caching()))
		counter(descChanged, st.Changed)
		counter(descRacy, st.Racy)
		counter(descCarried, st.Carried)
		counter(descUncached, st.Uncached)
		counter(descRestored, st.Restored)
		counter(descStateSaves, st.StateSaves, "ok")
		counter(descStateSaves, st.StateSaveErrors, "error")
		counter(descSuppressed, st.Suppressed)
		counter(descPrescans, st.Prescans, "started")
		counter(descPrescans, st.PrescansQueued, "queued")
		counter(descPrescans, st.PrescansDropped, "dropped")
	}
	if p := src.Pool; p != nil {
		for _, b := range p.Status() {
			gauge(descUp, b2f(b.Up), b.Address)
			counter(descBScans, b.Scans, b.Address)
			gauge(descInflight, float64(b.Inflight), b.Address)
			gauge(descTransport, 1, b.Address, string(b.Transport))
			for kind, n := range b.Errors {
				counter(descBErrors, n, b.Address, kind)
			}
		}
		gauge(descDatabase, 1, p.Database())
	}
	if f := src.Refusals; f != nil {
		perUser, total, waiting := f()
		counter(descRefusals, perUser, "max_open_per_user")
		counter(descRefusals, total, "max_open")
		counter(descRefusals, waiting, "waiting_requests")
	}
	if r := src.Actions; r != nil {
		st := r.Stats()
		counter(descDetections, st.Detections)
		counter(descQuarantined, st.Quarantined)
		counter(descQFailed, st.QuarantineFailed)
		counter(descCommands, st.Commands)
		counter(descCmdFailed, st.CommandsFailed)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Server serves /metrics on one address.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// Listen binds addr (host:port) and serves the metrics there until Close.
// It fails at once when addr cannot be bound.
func (m *Metrics) Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	// Go profiles, for the operator who bound this address: heap, goroutines,
	// and CPU profiles of up to 20 s (the write timeout).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "clamfuse: metrics at /metrics\n")
	})
	s := &Server{ln: ln, done: make(chan struct{}), srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(limitConns(ln, maxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // Serve only fails when the listener does; Close reports nothing more.
		}
	}()
	return s, nil
}

// Addr is the address bound, with the real port when addr had port 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is http://Addr()/metrics.
func (s *Server) URL() string { return "http://" + s.Addr() + "/metrics" }

// Close stops serving, waiting up to 2s for scrapes in progress.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}
