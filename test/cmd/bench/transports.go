package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// transports are the values of clamd.transport compared, in report order.
var transports = []string{"instream", "fildes"}

// transportRow is one line of the transports comparison: one way of
// scanning one set of files with one transport.
type transportRow struct {
	files     string // the file set, for the report
	via       string // "bare clamd" or "clamfuse"
	transport string
	wall      []time.Duration
	cpuScan   []time.Duration // `clamfuse scan`, or the clamfuse mount
	cpuClamd  []time.Duration
	err       string
}

// runTransports times the first-open scans of the small files
// (sequentially) and of the large file with each transport: bare
// (`clamfuse scan --jobs 1 --transport T`) and through a fresh clamfuse
// mount with clamd.transport = T, the page cache dropped before each run,
// the variants interleaved (in reverse order every other run).
func (b *bench) runTransports() []*transportRow {
	logf("transports: %s, bare clamd and through clamfuse", strings.Join(transports, " vs "))
	start := time.Now()
	defer func() { logf("  (transports took %v)", time.Since(start).Round(100*time.Millisecond)) }()

	// One clamfuse system per transport, mounted afresh before each run.
	defer b.dropExtra()
	mounts := map[string]*system{}
	for _, tr := range transports {
		s, err := b.extraClamfuse(tr, "", clamfuseConf{transport: tr})
		if err != nil {
			return []*transportRow{{files: "-", via: "clamfuse", transport: tr, err: err.Error()}}
		}
		mounts[tr] = s
	}

	var rows []*transportRow
	for _, set := range b.scanSets() {
		var variants []*transportRow
		for _, via := range []string{"bare clamd", "clamfuse"} {
			for _, tr := range transports {
				r := &transportRow{files: set.title, via: via, transport: tr}
				variants = append(variants, r)
				rows = append(rows, r)
			}
		}
		b.interleave(len(variants), func(i int) {
			r := variants[i]
			if r.err != "" {
				return
			}
			var err error
			if r.via == "bare clamd" {
				err = b.transportBare(r, set.dir)
			} else {
				err = b.transportMount(r, mounts[r.transport], set.files)
			}
			if err != nil {
				r.err = err.Error()
				logf("  %s, %s, %s: %v", r.files, r.via, r.transport, err)
			}
		})
		if b.ctx.Err() != nil {
			return rows
		}
		for _, r := range variants {
			if r.err == "" && len(r.wall) > 0 {
				logf("  %s, %-10s %-8s median %v over %d runs", r.files, r.via, r.transport, median(r.wall).Round(time.Microsecond), len(r.wall))
			}
		}
	}
	return rows
}

// scanSet is a set of files the first-open comparisons scan.
type scanSet struct {
	title string
	dir   []string // for clamfuse scan
	files []string // for reads through the mount
}

// scanSets are the files of the first-seq and first-big rows.
func (b *bench) scanSets() []scanSet {
	return []scanSet{
		{fmt.Sprintf("%d x %d KiB files, sequential", b.sizes.smallFiles, b.sizes.smallSize>>10), []string{b.data.small}, b.data.smallF},
		{fmt.Sprintf("%s random file", human(b.sizes.bigSize)), []string{b.data.big}, []string{b.data.big}},
	}
}

// transportBare is one run of `clamfuse scan --transport` on dirs.
func (b *bench) transportBare(r *transportRow, dirs []string) error {
	b.quiesce()
	if err := dropCaches(); err != nil {
		return fmt.Errorf("dropping the page cache: %v", err)
	}
	clamd := procCPU(b.clamdPid())
	var wall, cpu time.Duration
	err := withTimeout(b.ctx, b.opts.runTimeout, nil, func(ctx context.Context) error {
		var err error
		wall, cpu, err = b.runBare(ctx, 1, dirs, "--transport", r.transport)
		return err
	})
	if err != nil {
		return err
	}
	r.wall = append(r.wall, wall)
	r.cpuScan = append(r.cpuScan, cpu)
	r.cpuClamd = append(r.cpuClamd, procCPU(b.clamdPid())-clamd)
	return nil
}

// transportMount is one run of reading files once through a fresh mount
// of s (every open scans).
func (b *bench) transportMount(r *transportRow, s *system, files []string) error {
	wall, used, err := b.readFresh(s, files, nil)
	if err != nil {
		return err
	}
	r.wall = append(r.wall, wall)
	r.cpuScan = append(r.cpuScan, used.server)
	r.cpuClamd = append(r.cpuClamd, used.clamd)
	return nil
}

// notRun is the cell of a comparison's row without a figure: why.
func notRun(err string) string {
	if err == "" {
		err = "not run"
	}
	return "n/a: " + strings.ReplaceAll(err, "|", "/")
}

// reportTransports renders the comparison.
func (b *bench) reportTransports(p func(string, ...any)) {
	if len(b.trans) == 0 {
		return
	}
	p("## Transports: INSTREAM vs FILDES (median of %d runs)\n\n", b.opts.runs)
	p("First-open scans with `clamd.transport` = instream (clamfuse reads the file and streams it in 1 MiB chunks; clamd writes the stream to a temporary file, then scans that) and = fildes (clamfuse passes the open descriptor over the unix socket; clamd reads the file itself). ")
	p("bare clamd = `bin/clamfuse scan --jobs 1 --transport T`; clamfuse = one cat-like read of each file through a fresh mount with that transport (every open scans). The page cache is dropped before each run; the variants alternate, in reverse order every other run. ")
	p("scanner CPU = the `clamfuse scan` process or the clamfuse mount. The table above uses the default, auto, which is fildes on this unix socket.\n\n")
	p("| files | via | transport | wall | scanner CPU | clamd CPU | wall vs instream |\n|---|---|---|---:|---:|---:|---:|\n")
	ref := map[string]time.Duration{}
	for _, r := range b.trans {
		if r.transport == "instream" && r.err == "" && len(r.wall) > 0 {
			ref[r.files+"|"+r.via] = median(r.wall)
		}
	}
	for _, r := range b.trans {
		if r.err != "" || len(r.wall) == 0 {
			p("| %s | %s | %s | %s | | | |\n", r.files, r.via, r.transport, notRun(r.err))
			continue
		}
		vs := "-"
		if x, ok := ref[r.files+"|"+r.via]; ok && r.transport != "instream" {
			vs = fmt.Sprintf("%.2fx", ratio(median(r.wall), x))
		}
		p("| %s | %s | %s | %s | %s | %s | %s |\n", r.files, r.via, r.transport, fmtDur(median(r.wall)),
			fmtDur(median(r.cpuScan)), fmtDur(median(r.cpuClamd)), vs)
	}
	p("\n")
}
