package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/clamfuse/clamfuse/config"
	"github.com/clamfuse/clamfuse/fs"
)

// mountFlags are the command-line overrides of the config file.
type mountFlags struct {
	config     string
	clamd      config.Addresses // --clamd may be repeated
	timeout    time.Duration
	allowOther bool
	readOnly   bool
	logLevel   string
	logFormat  string
}

func parseMountFlags(args []string, stderr io.Writer) (config.Config, error) {
	fl := flag.NewFlagSet("mount", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var f mountFlags
	fl.StringVar(&f.config, "config", "", "TOML config file")
	fl.Func("clamd", `clamd address: a socket path, "unix:/path" or "tcp://host:port"; repeat for several (clamd.address)`,
		func(s string) error { f.clamd = append(f.clamd, s); return nil })
	fl.DurationVar(&f.timeout, "timeout", 0, "per-scan timeout (clamd.timeout)")
	fl.BoolVar(&f.allowOther, "allow-other", false, "let other users use the mount (mount.allow_other)")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount read-only (mount.read_only)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (log.level)")
	fl.StringVar(&f.logFormat, "log-format", "", "text or json (log.format)")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: clamfuse mount [--config FILE] [flags] [SOURCE MOUNTPOINT]\n")
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args, stderr); err != nil {
		return config.Config{}, err
	}
	cfg := config.Default()
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return cfg, usageError{err}
		}
	}
	switch fl.NArg() {
	case 0:
	case 2:
		cfg.Mount.Source, cfg.Mount.Target = fl.Arg(0), fl.Arg(1)
	default:
		return cfg, usageError{fmt.Errorf("mount: want SOURCE and MOUNTPOINT, got %d arguments", fl.NArg())}
	}
	// Relative paths (command line or file) are taken from the working
	// directory.
	for _, p := range []*string{&cfg.Mount.Source, &cfg.Mount.Target} {
		if *p != "" {
			if abs, err := filepath.Abs(*p); err == nil {
				*p = abs
			}
		}
	}
	// Flags given on the command line override the file.
	fl.Visit(func(fg *flag.Flag) {
		switch fg.Name {
		case "clamd":
			cfg.Clamd.Address = f.clamd
		case "timeout":
			cfg.Clamd.Timeout = config.Duration(f.timeout)
		case "allow-other":
			cfg.Mount.AllowOther = f.allowOther
		case "read-only":
			cfg.Mount.ReadOnly = f.readOnly
		case "log-level":
			cfg.Log.Level = f.logLevel
		case "log-format":
			cfg.Log.Format = f.logFormat
		}
	})
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	if err := cfg.ValidateMount(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// cmdMount mounts and serves in the foreground until unmounted or signalled.
func cmdMount(args []string, stderr io.Writer) error {
	return serveMount(args, stderr, mountHooks{})
}

// serveMount is cmdMount with hooks for how clamfuse was started (daemon.go).
func serveMount(args []string, stderr io.Writer, h mountHooks) error {
	cfg, err := parseMountFlags(args, stderr)
	if err != nil {
		return err
	}
	log, level := newLeveledLogger(h, stderr, cfg.Log)

	// Signals are caught from here on, before the mount exists: a SIGTERM
	// that comes while mounting (systemd stopping a unit that is still
	// starting, a test right after the mount appears) is handled once the
	// mount is up, by unmounting, instead of killing clamfuse and leaving
	// a dead mount behind.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)

	if _, err := clients(cfg.Clamd); err != nil {
		return usageError{err}
	}
	timeout := time.Duration(cfg.Clamd.Timeout)
	src, dst, err := fs.CheckPaths(cfg.Mount.Source, cfg.Mount.Target, log)
	if err != nil {
		return pathError(err)
	}

	limits, err := descriptorLimits(cfg.Mount.MaxOpenPerUser, log)
	if err != nil {
		return err
	}

	// The clamd pool, the gate, the actions, metrics (ops.go).
	svc, err := startService(cfg, src, dst, log, level)
	if err != nil {
		return err
	}
	defer svc.close()

	m, err := fs.Mount(fs.MountOptions{
		Source: src, Target: dst,
		AllowOther: cfg.Mount.AllowOther, ReadOnly: cfg.Mount.ReadOnly,
		Passthrough: cfg.Mount.Passthrough == "auto",
		FS: fs.Options{
			Gate:             svc.metrics.Gate(svc.gate),
			Actions:          svc.runner,
			Exclude:          svc.excluded,
			DenyWhileWritten: svc.denyWhileWritten,
			ReadOnly:         cfg.Mount.ReadOnly,
			AttrValid:        time.Duration(cfg.Mount.AttrTimeout),
			EntryValid:       time.Duration(cfg.Mount.AttrTimeout),
			Logger:           log,
			Limits:           limits,

			Invalidation: cfg.Mount.Invalidation == "auto",
			WatchedValid: time.Duration(cfg.Mount.WatchedAttrTimeout),
			WatchQueue:   watchQueueForTests(),
			ReaddirPlus:  readdirPlus(cfg.Mount.ReaddirPlus),
		},
	})
	if err != nil {
		return pathError(err)
	}
	svc.metrics.SetSources(svc.sources(m))
	// The nodes of the inodes the kernel caches are most of the heap:
	// a headroom of a quarter of them, not GOGC's doubling (gcpace.go).
	fs.PaceGC()
	// Processors for the readers blocked waiting for requests (procs.go).
	fs.SetProcs()
	log.Info("mounted", "source", src, "target", dst, "clamd", svc.pool.String(),
		"timeout", timeout, "read_only", cfg.Mount.ReadOnly, "allow_other", cfg.Mount.AllowOther,
		"invalidation", m.Watching(), "readdirplus", cfg.Mount.ReaddirPlus, "passthrough", m.Passthrough())
	if why := fs.OutsideWriters(src, dst); why != "" {
		log.Warn("the backing directory can be written outside the mount; verdicts of files over "+
			"cache.verify_max_size trust the file's state (mount in place, source = target, to keep every writer inside the mount)",
			"source", src, "why", why, "verify_max_size", cfg.Cache.VerifyMaxSize.String())
	}

	notifyReady(log, h, src, dst)
	stopPrewarm, waitPrewarm := startPrewarm(cfg.Scan.Prewarm, m, svc)
	defer waitPrewarm()
	defer stopPrewarm()
	for {
		select {
		case err := <-m.Done():
			// Unmounted from outside (fusermount3 -u, umount).
			notifyStopping(log)
			if err != nil {
				return fmt.Errorf("serving %s: %v", dst, err)
			}
			log.Info("unmounted", "target", dst)
			return nil
		case s := <-sig:
			if s == syscall.SIGHUP {
				reload(svc, args, log)
				continue
			}
			notifyStopping(log)
			stopPrewarm()
			log.Info("signal received, unmounting", "signal", s.String(), "target", dst)
			if err := m.Unmount(); err != nil {
				return err
			}
			if err := m.Wait(5 * time.Second); err != nil {
				// Detached lazily with files still open: exiting ends
				// the connection; those files get ENOTCONN.
				log.Warn("files still open on the detached mount; closing the connection", "target", dst)
				return nil
			}
			log.Info("unmounted", "target", dst)
			return nil
		}
	}
}

// startPrewarm starts the prewarm walk (scan.prewarm) beside the live
// mount m. stop ends it at once, without waiting: it never delays the
// unmount. wait then gives it a moment to log its last line.
func startPrewarm(on bool, m *fs.Mounted, svc *service) (stop, wait func()) {
	if !on {
		return func() {}, func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Prewarm(ctx, svc.gate, svc.metrics.Prewarmed)
	}()
	return cancel, func() {
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
}

// reload re-reads the configuration (file and command line, as at start)
// on SIGHUP and applies what can change live; a configuration that does
// not load is rejected whole, with its error on one line.
func reload(svc *service, args []string, log *slog.Logger) {
	log.Info("SIGHUP received; reloading the configuration")
	next, err := parseMountFlags(args, io.Discard)
	if err == nil {
		err = svc.reload(next)
	}
	if err != nil {
		log.Error("configuration not reloaded; keeping the current one", "err", err)
	}
}

// watchQueueForTests is CLAMFUSE_TEST_WATCH_QUEUE, a bound on the
// invalidations pending at once that tests set tiny to make the queue
// overflow (0, the default, otherwise).
func watchQueueForTests() int {
	n, _ := strconv.Atoi(os.Getenv("CLAMFUSE_TEST_WATCH_QUEUE"))
	return n
}

func pathError(err error) error {
	if errors.Is(err, fs.ErrBadInput) {
		return usageError{errors.Unwrap(err)}
	}
	return err
}

// descriptorLimits raises RLIMIT_NOFILE to its hard limit and derives
// from it the descriptor limits of the mount (fs.DeriveLimits), with
// mount.max_open_per_user when set; it logs them at INFO.
func descriptorLimits(perUser int, log *slog.Logger) (fs.Limits, error) {
	nofile, err := fs.RaiseNoFile()
	if err != nil {
		return fs.Limits{}, fmt.Errorf("RLIMIT_NOFILE: %v", err)
	}
	l := fs.DeriveLimits(nofile, perUser)
	log.Info("descriptor limits", "nofile", l.NoFile, "reserve", l.Reserve, "dir_fds", l.DirFDs,
		"orphans", l.Orphans, "max_open", l.MaxOpen, "max_open_per_user", l.MaxOpenPerUser)
	if l.MaxOpenPerUser > l.MaxOpen {
		log.Warn("mount.max_open_per_user is more than the descriptor limit leaves for open files; raise LimitNOFILE",
			"max_open_per_user", l.MaxOpenPerUser, "max_open", l.MaxOpen, "nofile", l.NoFile)
	}
	return l, nil
}

// readdirPlus is mount.readdirplus, which Validate has checked.
func readdirPlus(s string) fs.ReaddirPlus {
	r, err := fs.ParseReaddirPlus(s)
	if err != nil {
		return fs.ReaddirPlusAuto
	}
	return r
}
