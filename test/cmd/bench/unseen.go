package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// unseenRuns is the run count of the unseen comparison: a scan of the
// large file by a clamd that has not seen it takes seconds.
const unseenRuns = 3

// runUnseen times the first opens of the first-seq and first-big rows
// again, bare clamd against clamfuse, with a second private clamd that
// keeps no cache of the files it found clean (DisableCache yes): clamd's
// cache knows a file by a digest of its contents, so the table's clamd,
// which judged the same files in the runs before, answers from it after
// reading and hashing them, and only the first of those runs scans them.
// A file new to clamd, a download, is scanned. The variants alternate,
// in reverse order every other run, the page cache dropped before each.
func (b *bench) runUnseen() []*transportRow {
	logf("unseen: first opens with a clamd that keeps no cache of clean files")
	start := time.Now()
	defer func() { logf("  (unseen took %v)", time.Since(start).Round(100*time.Millisecond)) }()
	c, err := clamdtest.Start(filepath.Join(b.opts.dir, "clamd-nocache"), clamdtest.Options{
		MaxFileSize:     "2000M",
		StreamMaxLength: "2000M",
		ExtraConfig:     "DisableCache yes",
	})
	if err != nil {
		return []*transportRow{{files: "-", via: "clamd", err: err.Error()}}
	}
	defer func() {
		if err := c.Stop(); err != nil {
			logf("stopping the second clamd: %v", err)
		}
	}()
	defer b.dropExtra()
	mnt, err := b.extraClamfuse("unseen", "", clamfuseConf{clamd: c.Address()})
	if err != nil {
		return []*transportRow{{files: "-", via: "clamfuse", err: err.Error()}}
	}
	pid := clamdPidIn(c.Dir)

	var rows []*transportRow
	for _, set := range b.scanSets() {
		bare := &transportRow{files: set.title, via: "bare clamd", transport: "auto"}
		cf := &transportRow{files: set.title, via: "clamfuse", transport: "auto"}
		rows = append(rows, bare, cf)
		b.interleaveRuns(min(unseenRuns, b.opts.runs), 2, func(i int) {
			r := []*transportRow{bare, cf}[i]
			if r.err != "" {
				return
			}
			var wall, scanner time.Duration
			var err error
			if r == bare {
				b.quiesce()
				if err = dropCaches(); err == nil {
					clamd := procCPU(pid)
					err = withTimeout(b.ctx, b.opts.runTimeout, nil, func(ctx context.Context) error {
						var err error
						wall, scanner, err = b.runBare(ctx, 1, set.dir, "--clamd", c.Address())
						return err
					})
					r.cpuClamd = append(r.cpuClamd, procCPU(pid)-clamd)
				}
			} else {
				clamd := procCPU(pid)
				var used cpu
				wall, used, err = b.readFresh(mnt, set.files, nil)
				scanner = used.server
				r.cpuClamd = append(r.cpuClamd, procCPU(pid)-clamd)
			}
			if err != nil {
				r.err = err.Error()
				logf("  %s, %s: %v", r.files, r.via, err)
				return
			}
			r.wall = append(r.wall, wall)
			r.cpuScan = append(r.cpuScan, scanner)
		})
		if b.ctx.Err() != nil {
			return rows
		}
		for _, r := range []*transportRow{bare, cf} {
			if r.err == "" && len(r.wall) > 0 {
				logf("  %s, %-10s median %v over %d runs: %v", r.files, r.via, median(r.wall).Round(time.Microsecond), len(r.wall), roundAll(r.wall))
			}
		}
	}
	return rows
}

// reportUnseen renders the comparison.
func (b *bench) reportUnseen(p func(string, ...any)) {
	if len(b.unseen) == 0 {
		return
	}
	p("## First opens of files clamd has not seen (median of %d runs)\n\n", min(unseenRuns, b.opts.runs))
	p("clamd keeps a cache of the files it found clean, known by a digest of their contents (its default; `DisableCache`), and the table's clamd is one clamd for all the runs: from the second run on, its answers for the first-open rows come from that cache once it has read and hashed each file, and the table's first opens time that (the 1 GiB file's hash alone, not its scan). ")
	p("A file clamd has not seen, a new download, is scanned. Here the same first opens with a second private clamd, `DisableCache yes` and otherwise the same: bare clamd = `bin/clamfuse scan --jobs 1` to it, clamfuse = one cat-like read of each file through a fresh mount using it (transport auto: fildes); alternating, in reverse order every other run, the page cache dropped before each.\n\n")
	p("| files | via | wall | scanner CPU | clamd CPU | clamfuse / bare clamd |\n|---|---|---:|---:|---:|---:|\n")
	ref := map[string]time.Duration{}
	for _, r := range b.unseen {
		if r.via == "bare clamd" && r.err == "" && len(r.wall) > 0 {
			ref[r.files] = median(r.wall)
		}
	}
	for _, r := range b.unseen {
		if r.err != "" || len(r.wall) == 0 {
			p("| %s | %s | %s | | | |\n", r.files, r.via, notRun(r.err))
			continue
		}
		vs := "-"
		if x, ok := ref[r.files]; ok && r.via == "clamfuse" {
			vs = fmt.Sprintf("%.2fx", ratio(median(r.wall), x))
		}
		p("| %s | %s | %s | %s | %s | %s |\n", r.files, r.via, fmtDur(median(r.wall)),
			fmtDur(median(r.cpuScan)), fmtDur(median(r.cpuClamd)), vs)
	}
	p("\n")
	// The small files' bound, as the floor section gives it for the
	// first-seq row: bare clamd plus the floor's round trips.
	for _, res := range b.results {
		if res.w.id != "first-seq" || len(b.unseen) < 2 {
			continue
		}
		nm, okN := res.median(kindNative)
		fm, okF := res.median(kindFloor)
		bare, cf := b.unseen[0], b.unseen[1]
		if !okN || !okF || bare.err != "" || cf.err != "" || len(bare.wall) == 0 || len(cf.wall) == 0 {
			continue
		}
		bm := median(bare.wall)
		best := bm + fm - nm
		p("%s: bare clamd + the FUSE floor's round trips (floor - native of the first-seq row: %s - %s) = %s, %.2fx bare clamd; clamfuse took %s, %.2fx bare clamd, %.2fx that bound.\n\n",
			bare.files, fmtDur(fm), fmtDur(nm), fmtDur(best), ratio(best, bm), fmtDur(median(cf.wall)), ratio(median(cf.wall), bm), ratio(median(cf.wall), best))
	}
}
