package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/config"
)

const scanUsage = `usage: clamfuse scan [--config FILE] [--clamd ADDR] [--timeout D] [--jobs N] [--transport T] PATH...

Sends every regular file named, and every regular file under the
directories named (walked recursively; symbolic links are not followed,
and other special files are skipped), to clamd the way the mount scans a
file on its first open, with no FUSE in between: its descriptor with
FILDES, or its contents streamed with INSTREAM, as clamd.transport says
(auto: fildes over a unix socket, instream over TCP).
scan.max_size and scan.exclude are not applied: every file is scanned.

Prints one line per file on standard output, in the order of the walk:
  PATH: OK
  PATH: SIGNATURE FOUND
  PATH: ERROR: message

Exit status: 0 if every file is clean, 1 if any file is infected (and
none failed), 2 on a usage error or if any file could not be scanned.

Flags override the config file:
`

// scanFlags are the command-line overrides of the config file.
type scanFlags struct {
	config    string
	clamd     string
	timeout   time.Duration
	jobs      int
	transport string
}

// scanJob is one file to scan, or a problem found while walking (err set).
type scanJob struct {
	seq  int
	path string
	err  error
}

// scanResult is the outcome of one scanJob.
type scanResult struct {
	seq  int
	path string
	res  clamav.Result
	err  error
}

// cmdScan streams files to clamd with clamfuse's own scanner, no FUSE in
// between.
//
// Exit codes (see exitcodes.go): an infected file is an ordinary error
// (exitFailure, 1); a file that could not be scanned is reported as a
// usageError so that it exits with 2, as clamdscan does.
func cmdScan(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("scan", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var f scanFlags
	fl.StringVar(&f.config, "config", "", "TOML config file (only [clamd] is used)")
	fl.StringVar(&f.clamd, "clamd", "", `clamd address: a socket path, "unix:/path" or "tcp://host:port" (clamd.address)`)
	fl.DurationVar(&f.timeout, "timeout", 0, "per-file scan timeout (clamd.timeout)")
	fl.IntVar(&f.jobs, "jobs", 0, "files scanned in parallel (clamd.max_concurrent, default 4)")
	fl.StringVar(&f.transport, "transport", "", `"auto", "instream" or "fildes" (clamd.transport, default auto)`)
	fl.Usage = func() {
		fmt.Fprint(stderr, scanUsage)
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args, stderr); err != nil {
		return err
	}
	if fl.NArg() == 0 {
		return usageError{errors.New("scan: no PATH given")}
	}

	cfg := config.Default()
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return usageError{err}
		}
	}
	var badFlag error
	fl.Visit(func(fg *flag.Flag) {
		switch fg.Name {
		case "clamd":
			cfg.Clamd.Address = config.Addresses{f.clamd}
		case "timeout":
			if f.timeout <= 0 {
				badFlag = fmt.Errorf("scan: --timeout must be greater than 0, got %v", f.timeout)
			}
			cfg.Clamd.Timeout = config.Duration(f.timeout)
		case "jobs":
			if f.jobs < 1 {
				badFlag = fmt.Errorf("scan: --jobs must be at least 1, got %d", f.jobs)
			}
			cfg.Clamd.MaxConcurrent = f.jobs
		case "transport":
			cfg.Clamd.Transport = f.transport // checked by Validate
		}
	})
	if badFlag != nil {
		return usageError{badFlag}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}
	// With several clamd addresses configured, scan uses the first.
	network, addr, err := clamav.ParseAddress(cfg.Clamd.Address[0])
	if err != nil {
		return usageError{fmt.Errorf("clamd.address: %v", err)}
	}
	// One connection per job, kept open between its scans, as the mount
	// does (clamav.Options.Sessions).
	client, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: time.Duration(cfg.Clamd.Timeout),
		Transport: clamav.Transport(cfg.Clamd.Transport), Sessions: max(cfg.Clamd.MaxConcurrent, 1)})
	if err != nil {
		return usageError{err}
	}

	s := scanner{client: client, stdout: stdout, stderr: stderr}
	return s.run(fl.Args(), cfg.Clamd.MaxConcurrent)
}

// scanner runs one scan command.
type scanner struct {
	client *clamav.Client
	stdout io.Writer
	stderr io.Writer
}

// run walks paths in one goroutine, scans in jobs goroutines and prints
// the results in walk order from the calling goroutine, the only writer of
// stdout.
func (s scanner) run(paths []string, jobs int) error {
	jobc := make(chan scanJob, jobs)
	resc := make(chan scanResult, jobs)
	stop := make(chan struct{}) // closed when printing fails: stop walking
	go func() {
		defer close(jobc)
		seq := 0
		emit := func(j scanJob) bool {
			j.seq = seq
			seq++
			select {
			case jobc <- j:
				return true
			case <-stop:
				return false
			}
		}
		for _, p := range paths {
			if !s.walk(p, emit) {
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range jobs {
		wg.Go(func() {
			for j := range jobc {
				r := scanResult{seq: j.seq, path: j.path, err: j.err}
				if r.err == nil {
					r.res, r.err = s.scanFile(j.path)
				}
				resc <- r
			}
		})
	}
	go func() { wg.Wait(); close(resc) }()

	// Results arrive in completion order; print them in walk order.
	pending := map[int]scanResult{}
	next, infected, failed := 0, 0, 0
	var werr error
	for r := range resc {
		pending[r.seq] = r
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			var line string
			switch {
			case r.err != nil:
				failed++
				line = fmt.Sprintf("%s: ERROR: %v\n", r.path, r.err)
			case r.res.Infected:
				infected++
				line = fmt.Sprintf("%s: %s FOUND\n", r.path, r.res.Signature)
			default:
				line = r.path + ": OK\n"
			}
			if werr == nil {
				if _, werr = io.WriteString(s.stdout, line); werr != nil {
					close(stop) // drain the workers, print nothing more
				}
			}
		}
	}
	switch {
	case werr != nil:
		return fmt.Errorf("scan: writing results: %w", werr)
	case failed > 0:
		return usageError{fmt.Errorf("scan: %d of %d files could not be scanned (%d infected)", failed, next, infected)}
	case infected > 0:
		return fmt.Errorf("scan: %d of %d files infected", infected, next)
	}
	return nil
}

// walk emits the regular files at or under root, in lexical order, and a
// job with an error for each path that could not be read. It returns
// false when emit does.
func (s scanner) walk(root string, emit func(scanJob) bool) bool {
	fi, err := os.Lstat(root)
	if err != nil {
		return emit(scanJob{path: root, err: unwrapPath(err)})
	}
	switch {
	case fi.Mode().IsRegular():
		return emit(scanJob{path: root})
	case !fi.IsDir():
		fmt.Fprintf(s.stderr, "clamfuse: scan: %s: skipped, %s\n", root, kindOf(fi.Mode()))
		return true
	}
	ok := true
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// Lstat or ReadDir failed: report it; WalkDir skips the
			// directory after a failed ReadDir.
			if ok = emit(scanJob{path: p, err: unwrapPath(err)}); !ok {
				return filepath.SkipAll
			}
			return nil
		}
		if d.Type().IsRegular() {
			if ok = emit(scanJob{path: p}); !ok {
				return filepath.SkipAll
			}
		}
		// Directories are entered; symlinks and special files skipped.
		return nil
	})
	return ok
}

// scanFile sends the regular file at p to clamd: its descriptor, or its
// contents from offset 0.
func (s scanner) scanFile(p string) (clamav.Result, error) {
	// O_NOFOLLOW and O_NONBLOCK: a name swapped for a symlink or a FIFO
	// since the walk must neither be followed nor block the scan.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return clamav.Result{}, unwrapPath(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return clamav.Result{}, unwrapPath(err)
	}
	if !fi.Mode().IsRegular() {
		return clamav.Result{}, fmt.Errorf("not a regular file (%s)", kindOf(fi.Mode()))
	}
	return s.client.ScanFile(context.Background(), f, fi.Size())
}

// unwrapPath drops the *os.PathError wrapper, whose path the output line
// already shows.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// kindOf names the type of a file that is neither regular nor a directory.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link not followed"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	default:
		return strings.TrimSpace("special file " + m.Type().String())
	}
}
