package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/cache/actions"
	"github.com/clamfuse/clamfuse/cache/metrics"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/config"
	"github.com/clamfuse/clamfuse/fs"
)

// service is what runs beside the mount: the clamd pool and its health
// checks, the gate, the detection actions, the metrics endpoint and the
// database directory watcher. It owns the configuration in force, which
// reload replaces on SIGHUP.
//
// Lock order: service.mu only; it serializes reload and close.
type service struct {
	log    *slog.Logger
	level  *slog.LevelVar
	cfg    atomic.Pointer[config.Config] // in force; read by the filesystem's Exclude
	parsed config.Mount                  // [mount] as parsed, before CheckPaths resolved it

	pool    *clamav.Pool
	gate    *cache.Gate
	runner  *actions.Runner
	metrics *metrics.Metrics

	state     stateFile     // set by openState, before the mount
	stopSaves chan struct{} // closed by close: periodic saves of the state file end

	mu          sync.Mutex      // guards the fields below
	server      *metrics.Server // nil when metrics.listen = ""
	stopWatch   context.CancelFunc
	watchingDir string
	closed      bool
}

// newLeveledLogger builds the logger with h as usual, but lets a LevelVar
// decide the level, so that a reload can change it: the handler itself is
// built at debug and the LevelVar filters in front of it.
func newLeveledLogger(h mountHooks, stderr io.Writer, c config.Log) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	setLevel(level, c.Level)
	all := c
	all.Level = "debug"
	inner := h.logger(stderr, all)
	return slog.New(&levelHandler{inner: inner.Handler(), level: level}), level
}

func setLevel(v *slog.LevelVar, s string) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s)) // validated
	v.Set(l)
}

// levelHandler drops records below level, then hands the rest to inner.
type levelHandler struct {
	inner slog.Handler
	level *slog.LevelVar
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.inner.Enabled(ctx, l)
}

func (h *levelHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner.Handle(ctx, r)
}

func (h *levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &levelHandler{inner: h.inner.WithAttrs(as), level: h.level}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{inner: h.inner.WithGroup(name), level: h.level}
}

// clients builds one clamav.Client per configured address, each with the
// configured transport (auto: fildes for a unix socket, instream for TCP).
func clients(c config.Clamd) ([]*clamav.Client, error) {
	var out []*clamav.Client
	for _, a := range c.Address {
		network, addr, err := clamav.ParseAddress(a)
		if err != nil {
			return nil, fmt.Errorf("clamd.address: %v", err)
		}
		// As many connections kept open between scans as scans may run
		// at once (clamav.Options.Sessions).
		cl, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: time.Duration(c.Timeout),
			Transport: clamav.Transport(c.Transport), Sessions: max(c.MaxConcurrent, 1)})
		if err != nil {
			return nil, err
		}
		out = append(out, cl)
	}
	return out, nil
}

// policy is the gate's policy under c. It finds the programs of
// scan.exclude_exe now (a program replaced later counts again only after
// a reload), and logs at WARN those it cannot find or should not trust.
func (s *service) policy(c config.Config) cache.Policy {
	p := cache.Policy{
		MaxSize:       int64(c.Scan.MaxSize),
		AllowOversize: c.Scan.OnOversize == "allow",
		AllowOnError:  c.Scan.OnError == "allow",
		Audit:         c.Scan.Mode == "audit",
		LogRepeat:     time.Duration(c.Log.RepeatInterval),
	}
	if len(c.Scan.AllowSHA256) > 0 {
		p.AllowSHA256 = map[string]bool{}
		for _, h := range c.Scan.AllowSHA256 {
			p.AllowSHA256[strings.ToLower(h)] = true
		}
	}
	if len(c.Scan.AllowSignatures) > 0 {
		p.AllowSignatures = map[string]bool{}
		for _, sig := range c.Scan.AllowSignatures {
			p.AllowSignatures[sig] = true
		}
	}
	if len(c.Scan.ExcludeUIDs) > 0 {
		p.ExcludeUIDs = map[uint32]bool{}
		for _, uid := range c.Scan.ExcludeUIDs {
			p.ExcludeUIDs[uint32(uid)] = true
		}
	}
	for _, path := range c.Scan.ExcludeExe {
		e, weak, err := cache.ResolveExe(path)
		switch {
		case err != nil:
			s.log.Warn("scan.exclude_exe: no program found; it excludes nothing until a reload finds one", "exe", path, "err", err)
		case weak != "":
			s.log.Warn("scan.exclude_exe: a user other than root may replace or change this program, and so read unscanned files",
				"exe", path, "file", e.Real, "why", weak)
		}
		p.ExcludeExes = append(p.ExcludeExes, e)
	}
	return p
}

// logMode says at WARN that nothing is denied in audit mode.
func (s *service) logMode(c config.Config) {
	if c.Scan.Mode == "audit" {
		s.log.Warn("scan.mode is audit: files are scanned and detections logged, but no open is denied")
	}
}

func actionOptions(c config.Config, log *slog.Logger) actions.Options {
	return actions.Options{
		QuarantineDir:  c.Actions.QuarantineDir,
		Command:        c.Actions.OnInfected,
		CommandTimeout: time.Duration(c.Actions.OnInfectedTimeout),
		Launcher:       launcher(),
		Source:         c.Mount.Source,
		MountPoint:     c.Mount.Target,
		Logger:         log,
	}
}

// startService builds and starts everything but the mount. cfg is the
// configuration as parsed; src and dst are the mount paths resolved. It
// checks every clamd once before returning, so the first opens have a
// database version to key on.
func startService(cfg config.Config, src, dst string, log *slog.Logger, level *slog.LevelVar) (*service, error) {
	cs, err := clients(cfg.Clamd)
	if err != nil {
		return nil, usageError{err}
	}
	s := &service{log: log, level: level, metrics: metrics.New(), parsed: cfg.Mount}
	cfg.Mount.Source, cfg.Mount.Target = src, dst
	s.cfg.Store(&cfg)
	s.pool, err = clamav.NewPool(cs, clamav.PoolOptions{
		CheckInterval: time.Duration(cfg.Clamd.CheckInterval),
		Logger:        log,
		OnChange:      s.databaseChanged,
	})
	if err != nil {
		return nil, usageError{err}
	}
	timeout := time.Duration(cfg.Clamd.Timeout)
	s.gate = cache.NewGate(s.metrics.Scanner(s.pool), cache.Options{
		MaxEntries:    cfg.Cache.MaxEntries,
		TTL:           time.Duration(cfg.Cache.TTL),
		MaxConcurrent: cfg.Clamd.MaxConcurrent,
		Timeout:       timeout,
		MaxSize:       int64(cfg.Scan.MaxSize),
		AllowOversize: cfg.Scan.OnOversize == "allow",
		AllowOnError:  cfg.Scan.OnError == "allow",
		VerifyMaxSize: int64(cfg.Cache.VerifyMaxSize),
		Logger:        log,
	})
	s.gate.SetPolicy(s.policy(cfg))
	s.logMode(cfg)
	s.runner = actions.New(actionOptions(cfg, log))
	s.metrics.SetSources(s.sources(nil))

	if cfg.Metrics.Listen != "" {
		srv, err := s.metrics.Listen(cfg.Metrics.Listen)
		if err != nil {
			return nil, fmt.Errorf("metrics.listen: %v", err)
		}
		s.server = srv
		log.Info("serving metrics", "url", srv.URL())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up := s.pool.Check(ctx)
	cancel()
	if up == 0 {
		log.Warn("no clamd reachable; opens of unscanned files are denied until one is", "clamd", s.pool.String())
	}
	s.pool.Start()
	s.watch(cfg.Clamd.DatabaseDir)
	// After the first check: the verdicts are restored at once when a
	// clamd told its signature version, else when one first does.
	s.openState(statePath(cfg.Cache.StateFile, dst), src)
	s.stopSaves = make(chan struct{})
	if s.state.path != "" {
		go s.saveEvery(stateInterval, s.stopSaves)
	}
	return s, nil
}

// saveEvery writes the state file every interval until stop is closed.
func (s *service) saveEvery(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.saveState()
		}
	}
}

// databaseChanged is the pool's OnChange: clamd reports another database
// version, so verdicts are keyed on the new one.
func (s *service) databaseChanged(c clamav.Change) {
	s.gate.SetDatabase(c.Database)
	if c.Old != "" {
		s.log.Info("cached verdicts invalidated: clamd signature database changed", "old", c.Old, "new", c.Database)
	}
}

// watch (re)starts the database directory watcher on dir, "" for none.
// s.mu is held, or s is not shared yet.
func (s *service) watch(dir string) {
	if dir == s.watchingDir {
		return
	}
	if s.stopWatch != nil {
		s.stopWatch()
		s.stopWatch = nil
	}
	s.watchingDir = dir
	if dir == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	cache.WatchDir(ctx, dir, time.Second, s.log, func() {
		window := time.Duration(s.cfg.Load().Clamd.ReloadWindow)
		s.gate.Invalidate(window)
		s.log.Info("clamd database directory changed; cached verdicts invalidated", "dir", dir, "reload_window", window)
		s.pool.Kick() // a new version may show soon
	})
}

// excluded is the filesystem's Exclude, under the configuration in force.
// sources are what the metrics report, with the mount's refusals once
// it is mounted (m not nil).
func (s *service) sources(m *fs.Mounted) metrics.Sources {
	src := metrics.Sources{Gate: s.gate, Pool: s.pool, Actions: s.runner}
	if m != nil {
		src.Refusals = func() (uint64, uint64, uint64) {
			r := m.Refusals()
			return r.PerUser, r.Total, r.Waiting
		}
	}
	return src
}

func (s *service) excluded(rel string) bool { return s.cfg.Load().IsExcluded(rel) }

// denyWhileWritten is the filesystem's DenyWhileWritten, under the
// configuration in force (scan.while_written).
func (s *service) denyWhileWritten() bool { return s.cfg.Load().Scan.WhileWritten == "deny" }

// notReloadable are the keys whose change needs a restart (or remount).
var notReloadable = map[string]bool{
	"mount.source": true, "mount.target": true, "mount.allow_other": true, "mount.read_only": true, "mount.attr_timeout": true, "mount.max_open_per_user": true,
	"mount.invalidation": true, "mount.watched_attr_timeout": true, "mount.readdirplus": true, "mount.passthrough": true,
	"clamd.timeout": true, "clamd.max_concurrent": true,
	"scan.prewarm": true, "cache.max_entries": true, "cache.ttl": true, "cache.verify_max_size": true, "cache.state_file": true,
	"log.format": true,
}

// reload applies next, a configuration that parsed and validated. What
// can fail (binding a new metrics address) is done first: when it fails
// nothing is applied. Keys that cannot change live are reported, each on
// a WARN line, and keep their value.
func (s *service) reload(next config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	cur := *s.cfg.Load()
	parsed := cur
	parsed.Mount = s.parsed
	changed := changedKeys(parsed, next)

	// Keep what cannot change live.
	var skipped, applied []string
	for _, k := range changed {
		if notReloadable[k] {
			skipped = append(skipped, k)
		} else {
			applied = append(applied, k)
		}
	}
	next.Mount = cur.Mount
	next.Clamd.Timeout, next.Clamd.MaxConcurrent = cur.Clamd.Timeout, cur.Clamd.MaxConcurrent
	next.Scan.Prewarm = cur.Scan.Prewarm
	next.Cache = cur.Cache
	next.Log.Format = cur.Log.Format

	var newServer *metrics.Server
	if next.Metrics.Listen != cur.Metrics.Listen && next.Metrics.Listen != "" {
		srv, err := s.metrics.Listen(next.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics.listen: %v", err)
		}
		newServer = srv
	}
	cs, err := clients(next.Clamd)
	if err != nil {
		if newServer != nil {
			newServer.Close()
		}
		return err
	}

	setLevel(s.level, next.Log.Level)
	s.gate.SetPolicy(s.policy(next))
	if next.Scan.Mode != cur.Scan.Mode {
		s.logMode(next)
		if next.Scan.Mode == "enforce" {
			s.log.Info("scan.mode is enforce: detections and opens without a verdict are denied again")
		}
	}
	s.runner.SetOptions(actionOptions(next, s.log))
	if !reflect.DeepEqual(cur.Clamd.Address, next.Clamd.Address) || cur.Clamd.Transport != next.Clamd.Transport {
		if err := s.pool.SetBackends(cs); err != nil {
			return err // cannot happen: Validate wants an address
		}
	}
	s.pool.SetCheckInterval(time.Duration(next.Clamd.CheckInterval))
	s.cfg.Store(&next) // exclude, reload window
	s.watch(next.Clamd.DatabaseDir)
	if next.Metrics.Listen != cur.Metrics.Listen {
		if s.server != nil {
			s.server.Close()
		}
		s.server = newServer
		if newServer != nil {
			s.log.Info("serving metrics", "url", newServer.URL())
		} else {
			s.log.Info("metrics endpoint closed")
		}
	}

	for _, k := range skipped {
		s.log.Warn("configuration change not applied: restart clamfuse (or remount) to apply it", "key", k)
	}
	s.log.Info("configuration reloaded", "changed", strings.Join(applied, ","))
	return nil
}

// changedKeys lists the dotted keys whose values differ between a and b.
func changedKeys(a, b config.Config) []string {
	var out []string
	var walk func(prefix string, x, y reflect.Value)
	walk = func(prefix string, x, y reflect.Value) {
		t := x.Type()
		for i := range t.NumField() {
			key := prefix + t.Field(i).Tag.Get("toml")
			if t.Field(i).Type.Kind() == reflect.Struct {
				walk(key+".", x.Field(i), y.Field(i))
				continue
			}
			xv, yv := x.Field(i).Interface(), y.Field(i).Interface()
			if xs, ok := xv.([]string); ok && len(xs) == 0 {
				xv = []string(nil)
			}
			if ys, ok := yv.([]string); ok && len(ys) == 0 {
				yv = []string(nil)
			}
			if xs, ok := xv.([]int64); ok && len(xs) == 0 {
				xv = []int64(nil)
			}
			if ys, ok := yv.([]int64); ok && len(ys) == 0 {
				yv = []int64(nil)
			}
			if !reflect.DeepEqual(xv, yv) {
				out = append(out, key)
			}
		}
	}
	walk("", reflect.ValueOf(a), reflect.ValueOf(b))
	return out
}

// close stops the background work. Commands started by the actions get
// a few seconds to finish, then are killed.
func (s *service) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.stopSaves != nil {
		close(s.stopSaves)
	}
	s.saveState()
	s.pool.Close()
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if s.server != nil {
		s.server.Close()
	}
	s.runner.Close(5 * time.Second)
}
