package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// prewarmRow is one side of the prewarm comparison: clamfuse on the small
// files with scan.prewarm on or off.
type prewarmRow struct {
	prewarm bool
	s       *system
	walk    []time.Duration // the prewarm walk, as its "prewarm done" line says
	first   []time.Duration // sequential first open of every file, page cache dropped
	clamd   []time.Duration // clamd's CPU time during the first open
	cached  []time.Duration // the same opens again: verdicts cached, page cache warm
	err     string
}

// runPrewarm times the sequential first open of the small files through
// a fresh clamfuse mount with scan.prewarm on, once the prewarm walk is
// done (untimed but for its own duration; it starts with the page cache
// dropped), and with it off, the page cache dropped before each run, the
// two interleaved; then the same opens again (cached). Both mount the small files' directory alone, since the
// walk covers the whole mount.
func (b *bench) runPrewarm() []*prewarmRow {
	logf("prewarm: first opens of %d files after the prewarm walk, and without it", b.sizes.smallFiles)
	start := time.Now()
	defer func() { logf("  (prewarm took %v)", time.Since(start).Round(100*time.Millisecond)) }()

	defer b.dropExtra()
	src := filepath.Join(b.data.src, b.data.small)
	files := make([]string, len(b.data.smallF))
	for i, f := range b.data.smallF {
		files[i], _ = filepath.Rel(b.data.small, f)
	}
	var rows []*prewarmRow
	for _, on := range []bool{true, false} {
		r := &prewarmRow{prewarm: on}
		id := "prewarm"
		if !on {
			id = "no-prewarm"
		}
		var err error
		// Log level info, for the "prewarm done" line, on both sides.
		if r.s, err = b.extraClamfuse(id, src, clamfuseConf{prewarm: on, logLevel: "info"}); err != nil {
			r.err = err.Error()
		}
		rows = append(rows, r)
	}
	b.interleave(len(rows), func(i int) {
		r := rows[i]
		if r.err != "" {
			return
		}
		if err := b.prewarmRun(r, files); err != nil {
			r.err = err.Error()
			logf("  %s: %v", r.s.name, err)
		}
	})
	for _, r := range rows {
		if r.err == "" && len(r.first) > 0 {
			logf("  %-19s first open median %v, cached %v over %d runs", r.s.name,
				median(r.first).Round(time.Microsecond), median(r.cached).Round(time.Microsecond), len(r.first))
		}
	}
	return rows
}

// prewarmRun is one run of r: mount (with prewarm on, the page cache
// dropped first) and wait for the prewarm walk, then the first open of
// files and the cached re-open.
func (b *bench) prewarmRun(r *prewarmRow, files []string) error {
	var ready func(*mount) error
	if r.prewarm {
		// The walk reads the files from the disk, as at a mount after boot.
		if err := dropCaches(); err != nil {
			return fmt.Errorf("dropping the page cache: %v", err)
		}
		ready = func(m *mount) error {
			walk, counts, err := waitPrewarm(b.ctx, m, b.opts.runTimeout)
			if err != nil {
				return err
			}
			// Every file must have a verdict, or the first opens scan.
			if n := counts["scanned"] + counts["cached"]; n != len(files) || counts["errors"] != 0 {
				return fmt.Errorf("the prewarm walk judged %d of %d files (%d errors): %s", n, len(files), counts["errors"], tail(m.logPath))
			}
			r.walk = append(r.walk, walk)
			return nil
		}
	}
	first, used, err := b.readFresh(r.s, files, ready)
	if err != nil {
		return err
	}
	var cached time.Duration
	err = withTimeout(b.ctx, b.opts.runTimeout, r.s, func(ctx context.Context) error {
		var err error
		cached, _, err = timeRead(ctx, r.s, files, 1)
		return err
	})
	if err != nil {
		b.clamfuseFailed = true
		r.s.teardown()
		return err
	}
	r.first = append(r.first, first)
	r.clamd = append(r.clamd, used.clamd)
	r.cached = append(r.cached, cached)
	return nil
}

// waitPrewarm waits for the INFO line that ends m's prewarm walk and
// returns the walk's duration and its counts (scanned, cached, skipped,
// errors) as the line gives them.
func waitPrewarm(ctx context.Context, m *mount, timeout time.Duration) (time.Duration, map[string]int, error) {
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(m.logPath)
		if err != nil {
			return 0, nil, err
		}
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, `msg="prewarm stopped"`) {
				return 0, nil, fmt.Errorf("prewarm stopped: %s", l)
			}
			if !strings.Contains(l, `msg="prewarm done"`) {
				continue
			}
			var walk time.Duration
			counts := map[string]int{}
			for _, f := range strings.Fields(l) {
				k, v, _ := strings.Cut(f, "=")
				if k == "duration" {
					walk, err = time.ParseDuration(v)
				} else if n, err := strconv.Atoi(v); err == nil {
					counts[k] = n
				}
			}
			if err != nil {
				return 0, nil, fmt.Errorf("prewarm duration: %v: %s", err, l)
			}
			return walk, counts, nil
		}
		select {
		case <-m.exited:
			return 0, nil, fmt.Errorf("clamfuse exited during the prewarm walk (%v): %s", m.exitErr, tail(m.logPath))
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, nil, fmt.Errorf("no \"prewarm done\" after %v: %s", timeout, tail(m.logPath))
		}
	}
}

// reportPrewarm renders the comparison.
func (b *bench) reportPrewarm(p func(string, ...any)) {
	if len(b.pre) == 0 {
		return
	}
	p("## Prewarm: first open after `scan.prewarm` (median of %d runs)\n\n", b.opts.runs)
	p("clamfuse mounted afresh on the directory of the %d x %d KiB files with `scan.prewarm` = true, then, once the walk is done, every file opened and read once, sequentially, the page cache dropped (first open), then again (cached re-open); against the same with `scan.prewarm` = false. The prewarm walk is not in the open times; its duration is the one its `prewarm done` line gives (details under \"How each figure is measured\").\n\n",
		b.sizes.smallFiles, b.sizes.smallSize>>10)
	p("| scan.prewarm | prewarm walk | first open | clamd CPU during it | cached re-open | first open vs without prewarm |\n|---|---:|---:|---:|---:|---:|\n")
	var without time.Duration
	for _, r := range b.pre {
		if !r.prewarm && r.err == "" && len(r.first) > 0 {
			without = median(r.first)
		}
	}
	for _, r := range b.pre {
		if r.err != "" || len(r.first) == 0 {
			msg := r.err
			if msg == "" {
				msg = "not run"
			}
			p("| %t | n/a: %s | | | | |\n", r.prewarm, strings.ReplaceAll(msg, "|", "/"))
			continue
		}
		walk, vs := "-", "-"
		if r.prewarm {
			walk = fmtDur(median(r.walk))
			if without > 0 {
				vs = fmt.Sprintf("%.2fx", ratio(median(r.first), without))
			}
		}
		p("| %t | %s | %s | %s | %s | %s |\n", r.prewarm, walk, fmtDur(median(r.first)),
			fmtDur(median(r.clamd)), fmtDur(median(r.cached)), vs)
	}
	p("\n")
}
