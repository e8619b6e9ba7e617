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
	"syscall"
	"time"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/config"
	"github.com/clamfuse/clamfuse/fs"
)

// mountFlags are the command-line overrides of the config file.
type mountFlags struct {
	config     string
	clamd      string
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
	fl.StringVar(&f.clamd, "clamd", "", `clamd address: a socket path, "unix:/path" or "tcp://host:port"`)
	fl.DurationVar(&f.timeout, "timeout", 0, "per-scan timeout (clamd.timeout)")
	fl.BoolVar(&f.allowOther, "allow-other", false, "let other users use the mount (mount.allow_other)")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount read-only (mount.read_only)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (log.level)")
	fl.StringVar(&f.logFormat, "log-format", "", "text or json (log.format)")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: clamfuse mount [--config FILE] [flags] [SOURCE MOUNTPOINT]\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config.Config{}, err
		}
		return config.Config{}, usageError{err}
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
	cfg, err := parseMountFlags(args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log)

	network, addr, err := clamav.ParseAddress(cfg.Clamd.Address)
	if err != nil {
		return usageError{fmt.Errorf("clamd.address: %v", err)}
	}
	timeout := time.Duration(cfg.Clamd.Timeout)
	client, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: timeout})
	if err != nil {
		return usageError{err}
	}
	src, dst, err := fs.CheckPaths(cfg.Mount.Source, cfg.Mount.Target, log)
	if err != nil {
		return pathError(err)
	}

	gate := cache.NewGate(client, cache.Options{
		MaxEntries:    cfg.Cache.MaxEntries,
		TTL:           time.Duration(cfg.Cache.TTL),
		MaxConcurrent: cfg.Clamd.MaxConcurrent,
		Timeout:       timeout,
		MaxSize:       int64(cfg.Scan.MaxSize),
		AllowOversize: cfg.Scan.OnOversize == "allow",
		AllowOnError:  cfg.Scan.OnError == "allow",
		Logger:        log,
	})
	checkClamd(client, gate, log, true)

	m, err := fs.Mount(fs.MountOptions{
		Source: src, Target: dst,
		AllowOther: cfg.Mount.AllowOther, ReadOnly: cfg.Mount.ReadOnly,
		FS: fs.Options{
			Gate:     gate,
			Exclude:  cfg.IsExcluded,
			ReadOnly: cfg.Mount.ReadOnly,
			Logger:   log,
		},
	})
	if err != nil {
		return pathError(err)
	}
	log.Info("mounted", "source", src, "target", dst, "clamd", client.String(),
		"timeout", timeout, "read_only", cfg.Mount.ReadOnly, "allow_other", cfg.Mount.AllowOther)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	poll := time.NewTicker(30 * time.Second)
	defer poll.Stop()
	for {
		select {
		case err := <-m.Done():
			// Unmounted from outside (fusermount3 -u, umount).
			if err != nil {
				return fmt.Errorf("serving %s: %v", dst, err)
			}
			log.Info("unmounted", "target", dst)
			return nil
		case s := <-sig:
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
		case <-poll.C:
			checkClamd(client, gate, log, false)
		}
	}
}

// checkClamd asks clamd for its version, which names the signature
// database: verdicts made under another database no longer match.
func checkClamd(client *clamav.Client, gate *cache.Gate, log *slog.Logger, startup bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := client.Version(ctx)
	if err != nil {
		if startup {
			log.Warn("clamd not reachable; opens of unscanned files are denied until it is", "clamd", client.String(), "err", err)
		} else {
			log.Debug("clamd version check failed", "clamd", client.String(), "err", err)
		}
		return
	}
	if old := gate.Database(); old != v {
		if startup {
			log.Info("clamd reachable", "clamd", client.String(), "version", v)
		} else {
			log.Info("clamd signature database changed", "old", old, "new", v)
		}
		gate.SetDatabase(v)
	}
}

func pathError(err error) error {
	if errors.Is(err, fs.ErrBadInput) {
		return usageError{errors.Unwrap(err)}
	}
	return err
}
