package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The cost of the freshness rules of issue #11 on the rows they touch:
//
//   - cache.verify_max_size: a cached clean verdict of a small file is used
//     only after a digest of its contents (cached re-open of the small
//     files, with the default 1 MiB against 0);
//   - the racy rule: a verdict is not cached while the file's times are
//     too recent, and the scan after a write waits until they are not
//     (first open right after a write through the mount, at once after
//     the close against once the writes have settled, with clamd's scans
//     per file). The rule has no switch: the "settled" row is what every
//     open after a write cost before it.

// freshRow is one line of the freshness comparison.
type freshRow struct {
	what   string // the measure, for the report
	config string // the clamfuse setting of the row
	s      *system
	wall   []time.Duration
	server []time.Duration // the clamfuse mount's CPU
	scans  []float64       // clamd scans per file (after-write rows)
	err    string
}

// runFreshness runs both comparisons, each interleaved.
func (b *bench) runFreshness() []*freshRow {
	logf("freshness: cache.verify_max_size on cached re-opens; the racy rule on opens right after a write")
	start := time.Now()
	defer func() { logf("  (freshness took %v)", time.Since(start).Round(100*time.Millisecond)) }()
	defer b.dropExtra()

	var rows []*freshRow
	// Cached re-opens of the small files, verified or not.
	var verify []*freshRow
	for _, v := range []string{"1MiB", "0"} {
		r := &freshRow{what: fmt.Sprintf("cached re-open + read, %d small files", b.sizes.smallFiles),
			config: "verify_max_size = " + v}
		id := "verify-" + strings.ToLower(v)
		var err error
		if r.s, err = b.extraClamfuse(id, "", clamfuseConf{verifyMaxSize: v}); err != nil {
			r.err = err.Error()
		}
		verify = append(verify, r)
	}
	b.interleave(len(verify), func(i int) {
		if r := verify[i]; r.err == "" {
			if err := b.freshCached(r); err != nil {
				r.err = err.Error()
				logf("  %s: %v", r.s.name, err)
			}
		}
	})
	rows = append(rows, verify...)

	// Opens right after a write, at once or once settled, on one mount.
	s, err := b.extraClamfuse("after-write", "", clamfuseConf{})
	var written []*freshRow
	for _, atOnce := range []bool{true, false} {
		r := &freshRow{what: fmt.Sprintf("first open right after the file was written through the mount (%d x 16 KiB)", b.sizes.afterWrite),
			config: "opened once the writes settled", s: s}
		if atOnce {
			r.config = "opened at once after each close"
		}
		if err != nil {
			r.err = err.Error()
		}
		written = append(written, r)
	}
	run := 0
	b.interleave(len(written), func(i int) {
		r := written[i]
		if r.err != "" {
			return
		}
		run++
		if err := b.freshAfterWrite(r, i == 0, run); err != nil {
			r.err = err.Error()
			logf("  %s, %s: %v", r.s.name, r.config, err)
		}
	})
	_ = os.RemoveAll(filepath.Join(b.data.scratch, "fresh"))
	rows = append(rows, written...)
	for _, r := range rows {
		if r.err == "" && len(r.wall) > 0 {
			logf("  %-32s %-32s median %v over %d runs", r.s.name, r.config, median(r.wall).Round(time.Microsecond), len(r.wall))
		}
	}
	return rows
}

// freshCached is one run of the cached re-open of the small files through
// r's mount, primed once (verdicts cached, page cache warm).
func (b *bench) freshCached(r *freshRow) error {
	s := r.s
	if err := s.ensure(false); err != nil {
		b.clamfuseFailed = true
		return fmt.Errorf("mount: %v", err)
	}
	if g, ok := s.primed["fresh"]; !ok || g != s.gen {
		if err := withTimeout(b.ctx, b.opts.runTimeout, s, func(ctx context.Context) error {
			return readAll(ctx, s, b.data.smallF, 1)
		}); err != nil {
			return fmt.Errorf("priming: %v", err)
		}
		s.primed["fresh"] = s.gen
	}
	b.quiesce()
	before := b.cpuSnapshot(s)
	var wall time.Duration
	err := withTimeout(b.ctx, b.opts.runTimeout, s, func(ctx context.Context) error {
		var err error
		wall, _, err = timeRead(ctx, s, b.data.smallF, 1)
		return err
	})
	if err != nil {
		b.clamfuseFailed = true
		s.teardown()
		return err
	}
	r.wall = append(r.wall, wall)
	r.server = append(r.server, b.cpuSnapshot(s).since(before).server)
	return nil
}

// freshAfterWrite is one run of writing the after-write files through
// r's mount and opening them: each at once after its close (only the
// opens timed), or all once the background scans of the writes are over.
// It counts clamd's scans per file, background ones included.
func (b *bench) freshAfterWrite(r *freshRow, atOnce bool, run int) error {
	s := r.s
	if err := s.ensure(false); err != nil {
		b.clamfuseFailed = true
		return fmt.Errorf("mount: %v", err)
	}
	dir := filepath.Join("scratch", "fresh", fmt.Sprintf("run-%d", run))
	if err := os.MkdirAll(filepath.Join(s.root(), dir), 0o755); err != nil {
		return err
	}
	n := b.sizes.afterWrite
	files := make([]string, n)
	buf := make([]byte, 16<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	write := func(i int) error {
		files[i] = filepath.Join(dir, fmt.Sprintf("f%04d", i))
		copy(buf, fmt.Sprintf("fresh run %d file %d\n", run, i))
		return os.WriteFile(filepath.Join(s.root(), files[i]), buf, 0o644)
	}
	b.quiesce()
	scans0, err := b.clamd.ScanCount()
	if err != nil {
		return err
	}
	before := b.cpuSnapshot(s)
	var wall time.Duration
	err = withTimeout(b.ctx, b.opts.runTimeout, s, func(ctx context.Context) error {
		rbuf := make([]byte, readBuf)
		if atOnce {
			for i := range n {
				if err := write(i); err != nil {
					return err
				}
				start := time.Now()
				if err := readFile(filepath.Join(s.root(), files[i]), rbuf); err != nil {
					return err
				}
				wall += time.Since(start)
			}
			return nil
		}
		for i := range n {
			if err := write(i); err != nil {
				return err
			}
		}
		b.quiesce()
		var err error
		wall, _, err = timeRead(ctx, s, files, 1)
		return err
	})
	if err != nil {
		b.clamfuseFailed = true
		s.teardown()
		return err
	}
	server := b.cpuSnapshot(s).since(before).server
	b.quiesce() // the background scans of the last files
	scans, err := b.clamd.ScanCount()
	if err != nil {
		return err
	}
	r.wall = append(r.wall, wall)
	r.server = append(r.server, server)
	r.scans = append(r.scans, float64(scans-scans0)/float64(n))
	return nil
}

// reportFreshness renders the comparisons.
func (b *bench) reportFreshness(p func(string, ...any)) {
	if len(b.fresh) == 0 {
		return
	}
	p("## Freshness: the cost of issue #11's rules (median of %d runs)\n\n", b.opts.runs)
	p("`cache.verify_max_size`: the cached re-open + read of the small files (primed once, page cache warm) through two mounts, one with the default (a cached clean verdict of a file up to 1 MiB is used only after a digest of its contents), one with 0 (no digest); the two alternate. ")
	p("The racy rule (a verdict is not cached while the file's times are within its filesystem's window, granularity plus two ticks of the kernel's coarse clock, and the scan after a write waits until they are not): %d files of 16 KiB written through one mount, each opened and read at once after its close (only the opens timed), against all written, then opened once the background scans are over; clamd scans per file count the background scans too. There is no switch for the rule: the settled row is what such an open cost before it, and before it an open at once after the close shared the scan after the write (one scan per file).\n\n", b.sizes.afterWrite)
	p("| measure | clamfuse | wall | clamfuse CPU | clamd scans per file | vs |\n|---|---|---:|---:|---:|---:|\n")
	for i, r := range b.fresh {
		if r.err != "" || len(r.wall) == 0 {
			p("| %s | %s | %s | | | |\n", r.what, r.config, notRun(r.err))
			continue
		}
		scans, vs := "-", "-"
		if len(r.scans) > 0 {
			scans = fmt.Sprintf("%.2f", medianF(r.scans))
		}
		// Each pair: the first row against the second.
		if i%2 == 0 && i+1 < len(b.fresh) {
			if o := b.fresh[i+1]; o.err == "" && len(o.wall) > 0 {
				vs = fmt.Sprintf("%.2fx", ratio(median(r.wall), median(o.wall)))
			}
		}
		p("| %s | %s | %s | %s | %s | %s |\n", r.what, r.config, fmtDur(median(r.wall)), fmtDur(median(r.server)), scans, vs)
	}
	p("\n")
}

func medianF(x []float64) float64 {
	d := make([]time.Duration, len(x))
	for i, v := range x {
		d[i] = time.Duration(v * 1e6)
	}
	return float64(median(d)) / 1e6
}
