package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The FUSE floor: the read-only workloads through floorfs
// (test/cmd/bench/floor/floorfs.c), a single-threaded C server over raw
// /dev/fuse that does nothing but mirror the backing directory, with the
// kernel features clamfuse negotiates. What it costs over native is what
// any FUSE server with those features pays: the round trips and context
// switches. A target below it no FUSE server can meet.

// floorSource is floorfs's source, relative to the repository root.
const floorSource = "test/cmd/bench/floor/floorfs.c"

// floorTarget is a workload's target in numbers: at most limit times the
// reference system's median.
type floorTarget struct {
	ref   kind
	limit float64
	// data: the row times reading file data, which clamfuse with FUSE
	// passthrough leaves to the kernel and the floor serves: then the
	// floor bounds nothing.
	data bool
}

// buildFloor compiles floorfs from the repository at repo into dir and
// returns the binary's path; the error says why it cannot (gcc missing
// included).
func buildFloor(ctx context.Context, repo, dir string) (string, error) {
	return buildC(ctx, repo, dir, floorSource, "floorfs")
}

// buildC compiles the C program src (relative to the repository at repo)
// into dir/name with gcc -O2, and returns the binary's path; the error
// says why it cannot (gcc missing included).
func buildC(ctx context.Context, repo, dir, src, name string, flags ...string) (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", fmt.Errorf("gcc not installed (Debian package gcc): %s not built", name)
	}
	bin := filepath.Join(dir, name)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args := append([]string{"-O2", "-Wall", "-Wextra", "-o", bin}, flags...)
	out, err := exec.CommandContext(ctx, gcc, append(args, filepath.Join(repo, src))...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gcc %s: %v: %s", src, err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// setupFloor builds floorfs and checks that it mounts; if it cannot, the
// floor is not measured and its figures say why.
func (b *bench) setupFloor(s *system) {
	bin, err := buildFloor(b.ctx, b.repo, b.opts.dir)
	if err != nil {
		s.broken = "not measured: " + err.Error()
		logf("FUSE floor %s", s.broken)
		return
	}
	b.floorBin = bin
	if err := s.ensure(true); err != nil {
		s.broken = fmt.Sprintf("not measured: floorfs does not mount: %v", err)
		logf("FUSE floor %s", s.broken)
	}
}

// setupFloorPT checks that the passthrough floor (floorfs -p) mounts,
// where clamfuse got FUSE passthrough; otherwise it is not measured and
// its figures say why.
func (b *bench) setupFloorPT(s, floor *system) {
	cf := b.sys(kindClamfuse)
	switch {
	case b.floorBin == "":
		s.broken = floor.broken
	case b.opts.passthrough == "off":
		s.broken = "skipped (-passthrough off: clamfuse serves reads and writes itself)"
	case cf == nil || !cf.caching.passthrough:
		s.broken = "not measured: clamfuse was not granted FUSE passthrough (Linux 6.9+)"
	default:
		if err := s.ensure(true); err != nil {
			s.broken = fmt.Sprintf("not measured: floorfs -p does not mount: %v", err)
		}
	}
	if s.broken != "" {
		logf("passthrough floor %s", s.broken)
	}
}

// reportFloor writes the section of the floor: per workload it ran in,
// native, floor and clamfuse, their ratios, and whether the target is
// below the floor.
func (b *bench) reportFloor(p func(string, ...any)) {
	var rows []*result
	for _, r := range b.results {
		if r.w.floor != nil {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	fl := b.sys(kindFloor)
	p("## The FUSE floor\n\n")
	if fl.broken != "" {
		p("The FUSE floor: %s.\n\n", fl.broken)
		return
	}
	p("The same workloads through floorfs (`%s`): the thinnest FUSE server there is, single-threaded C over raw /dev/fuse, that mirrors the backing directory read-only and does nothing else, with the kernel features clamfuse negotiates (see How each figure is measured). floor / native is what any FUSE server with those features pays for the round trips and context switches alone; a target below it (\"target below the floor\": yes) is one that no FUSE server with these kernel features can meet, however fast its own code.\n\n", floorSource)
	p("| workload | native | FUSE floor | clamfuse | floor / native | clamfuse / native | clamfuse / floor | target | target below the floor |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---|:-:|\n")
	cell, rel := floorCell, floorRel
	passthrough := false
	if cf := b.sys(kindClamfuse); cf != nil {
		passthrough = cf.caching.passthrough
	}
	var firstOpen []string
	for _, r := range rows {
		t := r.w.floor
		below := "n/a"
		nm, okN := r.median(kindNative)
		fm, okF := r.median(kindFloor)
		switch {
		case t.data && passthrough:
			below = "n/a (clamfuse read through FUSE passthrough, the floor through FUSE: see the passthrough floor)"
		case t.ref == kindNative && okN && okF:
			x := ratio(fm, nm)
			below = "no"
			if x > t.limit {
				below = fmt.Sprintf("**yes** (floor %.2fx > %.2fx)", x, t.limit)
			}
		case t.ref == kindBare && okN && okF:
			// A scanning FUSE server at best: the scans of bare clamd
			// plus the floor's round trips, nothing more.
			if bm, ok := r.median(kindBare); ok {
				best := bm + fm - nm
				x := ratio(best, bm)
				below = "no"
				if x > t.limit {
					below = "**yes**"
				}
				below += fmt.Sprintf(" (bare clamd + (floor - native) = %s = %.2fx bare clamd)", fmtDur(best), x)
				firstOpen = append(firstOpen, fmt.Sprintf("%s: bare clamd %s, native %s, floor %s: a scanning FUSE server with these kernel features takes at least bare clamd + (floor - native) = %s, %.2fx bare clamd, against the target's %.2fx; clamfuse took %s (%s bare clamd).",
					r.w.id, fmtDur(bm), fmtDur(nm), fmtDur(fm), fmtDur(best), x, t.limit, cell(r, kindClamfuse), rel(r, kindClamfuse, kindBare)))
			}
		}
		// A | in a table cell, even in a code span, ends the cell.
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", strings.ReplaceAll(r.title, "|", "\\|"), cell(r, kindNative), cell(r, kindFloor), cell(r, kindClamfuse),
			rel(r, kindFloor, kindNative), rel(r, kindClamfuse, kindNative), rel(r, kindClamfuse, kindFloor), r.w.target, below)
	}
	p("\n")
	for _, f := range firstOpen {
		p("%s The floor's first open is an open without a scan: the round trips alone.", f)
		p(" clamfuse with its defaults also spares the READ round trip per file that the floor makes (a first open stores the bytes its own scan judged in the page cache before it answers), so this bound is a little high.")
		p("\n\n")
	}
	if cf := b.sys(kindClamfuse); cf != nil {
		if passthrough {
			p("clamfuse had FUSE passthrough (the kernel reads the judged files itself); the floor has not: on the rows that time reading data clamfuse may be below the floor, and the floor bounds nothing there.\n\n")
		}
		if cf.caching.known && !cf.caching.watching {
			p("Warning: clamfuse ran without invalidation (attributes trusted 1 s, and the warm rows wait that out), the floor with 1 hour timeouts: the warm rows do not compare like with like.\n\n")
		}
	}
}

// reportFloorPT writes the section of the passthrough floor: per
// workload it ran in, native, the passthrough floor and clamfuse, their
// ratios, and whether the target is below that floor.
func (b *bench) reportFloorPT(p func(string, ...any)) {
	var rows []*result
	for _, r := range b.results {
		if r.w.ptFloor != nil {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	fl := b.sys(kindFloorPT)
	p("## The passthrough floor\n\n")
	if fl.broken != "" {
		p("The passthrough floor: %s.\n\n", fl.broken)
		return
	}
	p("The rows whose data clamfuse leaves to the kernel (FUSE passthrough) through floorfs -p (`%s`): the FUSE floor, but it also negotiates FUSE passthrough and answers every open (and create) of a regular file with the backing file registered (FUSE_DEV_IOC_BACKING_OPEN, FOPEN_PASSTHROUGH), as clamfuse does for the opens its gate allowed, so the kernel reads and writes the backing file itself; it is writable for the write row (CREATE, UNLINK, SETATTR, FSYNC; GETXATTR answered ENODATA from memory). passthrough floor / native is what the kernel's passthrough costs with the fewest round trips any FUSE server pays around it (the open, and on writes the GETXATTR of security.capability the kernel sends before each write); a target below it (\"target below the passthrough floor\": yes) is one that no FUSE server using passthrough can meet.\n\n", floorSource)
	p("| workload | native | passthrough floor | clamfuse | passthrough floor / native | clamfuse / native | clamfuse / passthrough floor | target | target below the passthrough floor |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---|:-:|\n")
	cell, rel := floorCell, floorRel
	for _, r := range rows {
		t := r.w.ptFloor
		below := "n/a"
		nm, okN := r.median(t.ref)
		fm, okF := r.median(kindFloorPT)
		if okN && okF {
			x := ratio(fm, nm)
			below = "no"
			if x > t.limit {
				below = fmt.Sprintf("**yes** (floor %.2fx > %.2fx)", x, t.limit)
			}
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", strings.ReplaceAll(r.title, "|", "\\|"), cell(r, kindNative), cell(r, kindFloorPT), cell(r, kindClamfuse),
			rel(r, kindFloorPT, kindNative), rel(r, kindClamfuse, kindNative), rel(r, kindClamfuse, kindFloorPT), r.w.target, below)
	}
	p("\n")
}

// floorCell is the median of system k in r, or why there is none, for
// the floor sections.
func floorCell(r *result, k kind) string {
	if m, ok := r.median(k); ok {
		return fmtDur(m)
	}
	if s := r.per[k]; s != nil && s.na != "" {
		return "n/a (" + s.na + ")"
	}
	return "n/a"
}

// floorRel is the ratio of system a's median to system c's in r, or
// n/a.
func floorRel(r *result, a, c kind) string {
	am, ok1 := r.median(a)
	cm, ok2 := r.median(c)
	if !ok1 || !ok2 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", ratio(am, cm))
}
