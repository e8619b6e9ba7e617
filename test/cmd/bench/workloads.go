package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readBuf is the read size of every workload that reads files: cat's
// (coreutils reads 128 KiB at a time).
const readBuf = 128 << 10

// attrTimeoutWait outlasts the FUSE entry and attribute timeouts.
const attrTimeoutWait = 1200 * time.Millisecond

// parallelReaders is the reader count of the parallel first-open workload.
const parallelReaders = 8

// workload is one row of the table.
type workload struct {
	id    string
	title func(sizes) string
	// target says what clamfuse must achieve; eval checks it.
	target string
	cold   bool // drop the page cache before each run
	fresh  bool // remount FUSE systems before each run: uncached verdicts
	// expire: wait out the kernel's FUSE entry and attribute timeouts
	// (1 s in ClamFS, and in clamfuse without invalidation) before each
	// run, so that a warm run asks the FUSE server rather than timing
	// whether the previous run was less than a second ago. A clamfuse
	// with invalidation lets the kernel trust them for an hour, and tells
	// it of every change: its warm runs are served from the kernel's
	// cache, as a user's would be, and are not made to wait.
	expire bool
	// bare, when set, gives the `clamfuse scan` arguments of the bare
	// clamd column (jobs and paths relative to the data set).
	bare func(b *bench) (jobs int, paths []string)
	// prime runs once per mount before the first timed run (untimed).
	prime func(b *bench, s *system) error
	// prepare runs before each timed run (untimed), before the page cache
	// is dropped.
	prepare func(b *bench, s *system, run int) error
	// measure is the timed part; it returns the wall time, and for
	// workloads that time two things, a second one (aux).
	measure func(ctx context.Context, b *bench, s *system, run int) (wall, aux time.Duration, err error)
	// cleanup runs once after all runs of the workload.
	cleanup func(b *bench)
	// eval computes clamfuse's figure against the target.
	eval func(b *bench, r *result) evaluation
	// floor, when set, runs the workload on the FUSE floor too, and
	// says the target in numbers for its section of the report.
	floor *floorTarget
	// ptFloor runs the workload on the passthrough floor too (floorfs
	// -p): the rows whose data clamfuse leaves to the kernel's FUSE
	// passthrough; the target is floor's, or eval's limit.
	ptFloor *floorTarget
}

// evaluation is the target check of one row.
type evaluation struct {
	value  string // clamfuse's figure, e.g. "1.04x bare clamd"
	clamfs string // ClamFS's figure against the same reference
	met    string // "yes", "NO" or "n/a"
}

var workloads = []*workload{
	{
		id: "first-seq",
		title: func(z sizes) string {
			return fmt.Sprintf("first open, %d x %d KiB files, sequential cat", z.smallFiles, z.smallSize>>10)
		},
		target: "<= 1.25x bare clamd",
		cold:   true, fresh: true,
		bare: func(b *bench) (int, []string) { return 1, []string{b.data.small} },
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeRead(ctx, s, b.data.smallF, 1)
		},
		eval:  ratioTo(kindBare, 1.25),
		floor: &floorTarget{ref: kindBare, limit: 1.25},
	},
	{
		id: "first-par",
		title: func(z sizes) string {
			return fmt.Sprintf("first open, %d parallel readers over %d files", parallelReaders, z.smallFiles)
		},
		target: ">= 1.7x the sequential throughput",
		cold:   true, fresh: true,
		bare: func(b *bench) (int, []string) { return parallelReaders, []string{b.data.small} },
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeRead(ctx, s, b.data.smallF, parallelReaders)
		},
		eval: speedupOver("first-seq", 1.7),
	},
	{
		id:     "first-big",
		title:  func(z sizes) string { return fmt.Sprintf("first open, %s random file", human(z.bigSize)) },
		target: "<= 1.10x bare clamd (ClamFS ~11x)",
		cold:   true, fresh: true,
		bare: func(b *bench) (int, []string) { return 1, []string{b.data.big} },
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeRead(ctx, s, []string{b.data.big}, 1)
		},
		eval: ratioTo(kindBare, 1.10),
	},
	{
		id:     "cached-big",
		title:  func(z sizes) string { return fmt.Sprintf("cached re-read, %s", human(z.bigSize)) },
		target: "<= 1.05x native (ClamFS 53x)",
		prime:  func(b *bench, s *system) error { return readAll(context.Background(), s, []string{b.data.big}, 1) },
		// Read again before each run, untimed: whatever dropped the page
		// cache since (another bench's drop_caches on a shared machine)
		// would make the run time the disk.
		prepare: func(b *bench, s *system, _ int) error {
			return readAll(context.Background(), s, []string{b.data.big}, 1)
		},
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeRead(ctx, s, []string{b.data.big}, 1)
		},
		eval:    ratioTo(kindNative, 1.05),
		floor:   &floorTarget{ref: kindNative, limit: 1.05, data: true},
		ptFloor: &floorTarget{ref: kindNative, limit: 1.05},
	},
	{
		id:     "cached-small",
		title:  func(z sizes) string { return fmt.Sprintf("cached re-open + read, %d small files", z.smallFiles) },
		target: "<= 3x native",
		prime:  func(b *bench, s *system) error { return readAll(context.Background(), s, b.data.smallF, 1) },
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeRead(ctx, s, b.data.smallF, 1)
		},
		eval:  ratioTo(kindNative, 3),
		floor: &floorTarget{ref: kindNative, limit: 3},
	},
	{
		id:     "ls-warm",
		title:  func(z sizes) string { return fmt.Sprintf("`ls -lR` on %d files, warm", z.treeFiles) },
		target: "<= 2x native (ClamFS 22x)",
		expire: true,
		prime:  func(b *bench, s *system) error { return runLs(context.Background(), b, s) },
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeIt(func() error { return runLs(ctx, b, s) })
		},
		eval:  ratioTo(kindNative, 2),
		floor: &floorTarget{ref: kindNative, limit: 2},
	},
	{
		id:     "stat-warm",
		title:  func(z sizes) string { return fmt.Sprintf("`find -type f | xargs stat` on %d files, warm", z.treeFiles) },
		target: "<= 1.5x native",
		expire: true,
		prime:  func(b *bench, s *system) error { return runFindStat(context.Background(), b, s) },
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeIt(func() error { return runFindStat(ctx, b, s) })
		},
		eval:  ratioTo(kindNative, 1.5),
		floor: &floorTarget{ref: kindNative, limit: 1.5},
	},
	{
		id:     "ls-cold",
		title:  func(z sizes) string { return fmt.Sprintf("`ls -lR` on %d files, cold (caches dropped)", z.treeFiles) },
		target: "<= 3x native (ClamFS 22x)",
		cold:   true,
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeIt(func() error { return runLs(ctx, b, s) })
		},
		eval:  ratioTo(kindNative, 3),
		floor: &floorTarget{ref: kindNative, limit: 3},
	},
	{
		id:     "stat-cold",
		title:  func(z sizes) string { return fmt.Sprintf("`find -type f | xargs stat` on %d files, cold", z.treeFiles) },
		target: "<= 2x native",
		cold:   true,
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			return timeIt(func() error { return runFindStat(ctx, b, s) })
		},
		eval:  ratioTo(kindNative, 2),
		floor: &floorTarget{ref: kindNative, limit: 2},
	},
	{
		id: "write",
		title: func(z sizes) string {
			return fmt.Sprintf("write %s through the mount (`dd bs=1M conv=fsync`)", human(z.writeSize))
		},
		target: "<= 1.2x native",
		cold:   true, // also flushes the previous run's file
		prepare: func(b *bench, s *system, _ int) error {
			// Through the system itself, so that a FUSE mount does not
			// keep a dentry of the old file.
			err := os.Remove(filepath.Join(s.root(), "scratch", "dd.out"))
			if errors.Is(err, os.ErrNotExist) {
				err = nil
			}
			return err
		},
		measure: func(ctx context.Context, b *bench, s *system, _ int) (time.Duration, time.Duration, error) {
			out := filepath.Join(s.root(), "scratch", "dd.out")
			return timeIt(func() error {
				return runQuiet(ctx, "dd", "if=/dev/zero", "of="+out, "bs=1M",
					"count="+strconv.FormatInt(b.sizes.writeSize>>20, 10), "conv=fsync", "status=none")
			})
		},
		cleanup: func(b *bench) { _ = os.Remove(filepath.Join(b.data.scratch, "dd.out")) },
		eval:    ratioTo(kindNative, 1.2),
		ptFloor: &floorTarget{ref: kindNative, limit: 1.2},
	},
	{
		id: "after-write",
		title: func(z sizes) string {
			return fmt.Sprintf("first open right after the file was written through the mount (%d x 16 KiB)", z.afterWrite)
		},
		target:  "<= 1.2x a cached open",
		prepare: writeThrough,
		measure: func(ctx context.Context, b *bench, s *system, run int) (time.Duration, time.Duration, error) {
			files := afterWriteFiles(b, s, run)
			first, _, err := timeRead(ctx, s, files, 1)
			if err != nil {
				return 0, 0, err
			}
			cached, _, err := timeRead(ctx, s, files, 1)
			return first, cached, err
		},
		cleanup: func(b *bench) {
			entries, _ := os.ReadDir(b.data.scratch)
			for _, e := range entries {
				_ = os.RemoveAll(filepath.Join(b.data.scratch, e.Name()))
			}
		},
		eval: ratioToOwnAux(1.2),
	},
}

func workloadIDs() []string {
	ids := make([]string, 0, len(workloads)+1)
	for _, w := range workloads {
		ids = append(ids, w.id)
	}
	return append(ids, "rss", "transports", "unseen", "prewarm", "freshness")
}

func workloadByID(id string) *workload {
	for _, w := range workloads {
		if w.id == id {
			return w
		}
	}
	if id == "rss" || id == "transports" || id == "unseen" || id == "prewarm" || id == "freshness" {
		return &workload{id: id}
	}
	return nil
}

// series holds one system's runs of one workload.
type series struct {
	wall, aux                      []time.Duration
	cpuDriver, cpuServer, cpuClamd []time.Duration
	na                             string // why there is no figure
	capped                         bool   // ClamFS runs cut short by the budget
	spent                          time.Duration
}

// result is one workload's runs on every system.
type result struct {
	w     *workload
	title string
	per   map[kind]*series
}

func (r *result) median(k kind) (time.Duration, bool) {
	s := r.per[k]
	if s == nil || len(s.wall) == 0 || s.na != "" {
		return 0, false
	}
	return median(s.wall), true
}

// runWorkload runs w on every system, interleaved: run 1 on each system in
// turn, then run 2 on each in reverse order, and so on, so that no system
// always runs right after the same other one (a ClamFS run leaves clamd
// and the disk busier than a native one does).
func (b *bench) runWorkload(w *workload) *result {
	r := &result{w: w, title: w.title(b.sizes), per: map[kind]*series{}}
	logf("workload %s: %s", w.id, r.title)
	start := time.Now()
	defer func() { logf("  (%s took %v)", w.id, time.Since(start).Round(100*time.Millisecond)) }()
	for _, s := range b.systems {
		r.per[s.kind] = &series{}
		if s.kind == kindBare && w.bare == nil || s.kind == kindFloor && w.floor == nil || s.kind == kindFloorPT && w.ptFloor == nil {
			r.per[s.kind].na = "-"
		}
	}
	for run := 0; run < b.opts.runs; run++ {
		for _, s := range inTurn(b.systems, run) {
			if b.ctx.Err() != nil {
				return r
			}
			se := r.per[s.kind]
			switch {
			case se.na != "":
				continue
			case s.broken != "":
				se.na = s.broken
				continue
			case s.kind == kindClamFS && (len(se.wall) >= b.opts.clamfsRuns || se.spent > b.opts.clamfsBudget):
				se.capped = true
				continue
			}
			if err := b.oneRun(w, s, se, run); err != nil {
				se.na = err.Error()
				logf("  %s: %v", s.name, err)
				if s.kind == kindClamfuse {
					b.clamfuseFailed = true
				}
				if s.fuse() {
					s.teardown() // the next workload mounts afresh
				}
			}
		}
	}
	if w.cleanup != nil {
		w.cleanup(b)
	}
	for _, s := range b.systems {
		se := r.per[s.kind]
		if len(se.wall) > 0 && se.na == "" {
			logf("  %-10s median %v over %d runs: %v", s.name, median(se.wall).Round(time.Microsecond), len(se.wall), roundAll(se.wall))
		}
	}
	return r
}

// inTurn is the order of the systems in run number run: as listed in
// even runs, reversed in odd ones.
func inTurn(systems []*system, run int) []*system {
	if run%2 == 0 {
		return systems
	}
	rev := make([]*system, len(systems))
	for i, s := range systems {
		rev[len(systems)-1-i] = s
	}
	return rev
}

// roundAll is ds in order, each rounded to the millisecond, for the log.
func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// oneRun mounts and primes as w needs (untimed), then times one run.
func (b *bench) oneRun(w *workload, s *system, se *series, run int) error {
	if err := s.ensure(w.fresh); err != nil {
		return fmt.Errorf("mount: %v", err)
	}
	gen := 0
	if s.fuse() {
		gen = s.gen
	}
	if w.prime != nil {
		if g, ok := s.primed[w.id]; !ok || g != gen {
			if err := withTimeout(b.ctx, b.opts.runTimeout, s, func(context.Context) error { return w.prime(b, s) }); err != nil {
				return fmt.Errorf("priming: %v", err)
			}
			s.primed[w.id] = gen
			s.lastUsed = time.Now()
		}
	}
	b.quiesce()
	if w.prepare != nil {
		if err := withTimeout(b.ctx, b.opts.runTimeout, s, func(context.Context) error { return w.prepare(b, s, run) }); err != nil {
			return fmt.Errorf("preparing: %v", err)
		}
	}
	if w.cold {
		if err := dropCaches(); err != nil {
			return fmt.Errorf("dropping the page cache: %v", err)
		}
	}
	// The floor trusts names and attributes for an hour, as clamfuse with
	// invalidation does.
	if w.expire && s.fuse() && !s.floor() && !(s.kind == kindClamfuse && s.current().caching.watching) {
		// Only the time since this system last served the tree counts;
		// the other systems' runs in between usually cover most of it.
		time.Sleep(attrTimeoutWait - time.Since(s.lastUsed))
	}

	var stopPerf func()
	if b.opts.perfDir != "" && s.kind == kindClamfuse && run == b.opts.runs-1 {
		stopPerf = startPerf(filepath.Join(b.opts.perfDir, w.id+".data"), s.current().pid())
	}
	before := b.cpuSnapshot(s)
	var wall, aux, scanCPU time.Duration
	err := withTimeout(b.ctx, b.opts.runTimeout, s, func(ctx context.Context) error {
		var err error
		if s.kind == kindBare {
			jobs, paths := w.bare(b)
			wall, scanCPU, err = b.runBare(ctx, jobs, paths)
			return err
		}
		wall, aux, err = w.measure(ctx, b, s, run)
		return err
	})
	if err != nil {
		if stopPerf != nil {
			stopPerf()
		}
		return err
	}
	after := b.cpuSnapshot(s)
	s.lastUsed = time.Now()
	if stopPerf != nil {
		stopPerf()
	}
	se.wall = append(se.wall, wall)
	se.aux = append(se.aux, aux)
	se.spent += wall + aux
	se.cpuDriver = append(se.cpuDriver, after.driver-before.driver-scanCPU)
	server := after.server - before.server
	if s.kind == kindBare {
		server = scanCPU
	}
	se.cpuServer = append(se.cpuServer, server)
	se.cpuClamd = append(se.cpuClamd, after.clamd-before.clamd)
	return nil
}

// interleave runs each of n variants of a comparison once per run, -runs
// times, in reverse order every other run; it stops when the bench is
// cancelled.
func (b *bench) interleave(n int, one func(i int)) { b.interleaveRuns(b.opts.runs, n, one) }

// interleaveRuns is interleave with runs runs.
func (b *bench) interleaveRuns(runs, n int, one func(i int)) {
	for run := 0; run < runs; run++ {
		for j := range n {
			if b.ctx.Err() != nil {
				return
			}
			if run%2 == 1 {
				one(n - 1 - j)
			} else {
				one(j)
			}
		}
	}
}

// readFresh mounts s afresh (no cached verdicts), runs ready on the new
// mount if set, waits until clamd and the FUSE servers are idle, drops
// the page cache, and times one sequential read of files through s; only
// the read is timed. It returns the wall time and the CPU time used
// meanwhile.
func (b *bench) readFresh(s *system, files []string, ready func(*mount) error) (time.Duration, cpu, error) {
	if err := s.ensure(true); err != nil {
		b.clamfuseFailed = true
		return 0, cpu{}, fmt.Errorf("mount: %v", err)
	}
	if ready != nil {
		if err := ready(s.current()); err != nil {
			b.clamfuseFailed = true
			s.teardown()
			return 0, cpu{}, err
		}
	}
	b.quiesce()
	if err := dropCaches(); err != nil {
		return 0, cpu{}, fmt.Errorf("dropping the page cache: %v", err)
	}
	before := b.cpuSnapshot(s)
	var wall time.Duration
	err := withTimeout(b.ctx, b.opts.runTimeout, s, func(ctx context.Context) error {
		var err error
		wall, _, err = timeRead(ctx, s, files, 1)
		return err
	})
	if err != nil {
		b.clamfuseFailed = true
		s.teardown()
		return 0, cpu{}, err
	}
	return wall, b.cpuSnapshot(s).since(before), nil
}

// runBare runs `clamfuse scan` on paths of the data set and returns its
// wall time and CPU time.
// extra flags go before the paths (e.g. --transport).
func (b *bench) runBare(ctx context.Context, jobs int, paths []string, extra ...string) (time.Duration, time.Duration, error) {
	args := []string{"scan", "--clamd", b.clamd.Address(), "--timeout", "10m", "--jobs", strconv.Itoa(jobs)}
	args = append(args, extra...)
	for _, p := range paths {
		args = append(args, filepath.Join(b.data.src, p))
	}
	cmd := exec.CommandContext(ctx, b.bin, args...)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, 0, err
	}
	defer devnull.Close()
	cmd.Stdout = devnull
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("clamfuse scan: %v: %s", err, stderr.String())
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

func timeIt(fn func() error) (time.Duration, time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), 0, err
}

// readAll opens and reads to the end each of files (relative to the
// system's root) with readers goroutines, like cat, 128 KiB at a time.
func readAll(ctx context.Context, s *system, files []string, readers int) error {
	root := s.root()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i := range readers {
		wg.Go(func() {
			if asUser != nil {
				// This thread only, until the goroutine is done. The
				// thread must not end with it (runtime.Goexit while
				// locked): a FUSE server started from that thread would
				// get its Pdeathsig.
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				defer becomeUser(&syscall.Credential{})
				if err := becomeUser(asUser); err != nil {
					errs[i] = err
					return
				}
			}
			buf := make([]byte, readBuf)
			for {
				j := int(next.Add(1)) - 1
				if j >= len(files) || ctx.Err() != nil {
					return
				}
				if err := readFile(filepath.Join(root, files[j]), buf); err != nil {
					errs[i] = err
					next.Store(int64(len(files))) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// readFile reads p as cat does, system call for system call: open,
// fstat, fadvise(SEQUENTIAL), read to EOF, close. Not os.Open: Go
// registers every file it opens with its epoll poller, which fails at
// once for a local regular file but succeeds for a FUSE file (it has a
// poll method), so os.Open and Close cost two epoll_ctl calls more on a
// FUSE mount than natively, which no cat pays.
func readFile(p string, buf []byte) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return &os.PathError{Op: "fstat", Path: p, Err: err}
	}
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return &os.PathError{Op: "read", Path: p, Err: err}
		}
		if n == 0 {
			break
		}
	}
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: p, Err: err}
	}
	return nil
}

func runLs(ctx context.Context, b *bench, s *system) error {
	return runQuiet(ctx, "ls", "-lR", filepath.Join(s.root(), b.data.tree))
}

func runFindStat(ctx context.Context, b *bench, s *system) error {
	return runQuiet(ctx, "bash", "-o", "pipefail", "-c", `find "$1" -type f -print0 | xargs -0 stat > /dev/null`,
		"bench", filepath.Join(s.root(), b.data.tree))
}

// runQuiet runs a command with its output to /dev/null, and returns its
// standard error with a failure.
func runQuiet(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if asUser != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: asUser}
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd.Stdout = devnull
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, stderr.String())
	}
	return nil
}

// writeThrough writes the after-write files of this run through the
// system's mount (close included), new names each run.
func writeThrough(b *bench, s *system, run int) error {
	files := afterWriteFiles(b, s, run)
	root := s.root()
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(files[0])), 0o755); err != nil {
		return err
	}
	buf := make([]byte, 16<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for i, f := range files {
		copy(buf, fmt.Sprintf("%s run %d file %d\n", s.name, run, i))
		if err := os.WriteFile(filepath.Join(root, f), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func afterWriteFiles(b *bench, s *system, run int) []string {
	dir := filepath.Join("scratch", fmt.Sprintf("aw-%d-%d", s.kind, run))
	files := make([]string, b.sizes.afterWrite)
	for i := range files {
		files[i] = filepath.Join(dir, fmt.Sprintf("f%04d", i))
	}
	return files
}

// dropCaches writes dirty pages back, then drops the page cache, dentries
// and inodes, so that the next run reads from the disk.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// startPerf records a call-graph profile of process pid into out until the
// returned function is called.
func startPerf(out string, pid int) func() {
	cmd := exec.Command("perf", "record", "-q", "-F", "1999", "-g", "-p", strconv.Itoa(pid), "-o", out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf("perf: %v", err)
		return func() {}
	}
	time.Sleep(300 * time.Millisecond) // let perf attach
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf("  perf profile of clamfuse: %s (perf report -i %s)", out, out)
	}
}

// quiesce waits until clamd and every mounted FUSE server have used no
// CPU for a while, so that background work of one system does not run
// into the next system's timed run: clamfuse judges a file written
// through it in the background once it is closed, and the scan of a
// 512 MiB file outlasts the dd that wrote it.
func (b *bench) quiesce() {
	const (
		step     = 50 * time.Millisecond
		quietFor = 100 * time.Millisecond // 10 ticks of the CPU clocks
		maxWait  = 2 * time.Minute
	)
	busy := func() time.Duration {
		t := procCPU(b.clamdPid())
		for _, s := range b.allSystems() {
			if m := s.current(); m != nil {
				t += procCPU(m.pid())
			}
		}
		return t
	}
	start := time.Now()
	prev, quiet := busy(), time.Duration(0)
	for quiet < quietFor && b.ctx.Err() == nil {
		if time.Since(start) > maxWait {
			b.note(fmt.Sprintf("Warning: clamd or a FUSE server was still busy %v before a run; that run may be perturbed.", maxWait))
			return
		}
		time.Sleep(step)
		cur := busy()
		if cur == prev {
			quiet += step
		} else {
			quiet = 0
		}
		prev = cur
	}
	if d := time.Since(start); d > time.Second {
		logf("  waited %v for background work to finish", d.Round(100*time.Millisecond))
	}
}

// asUser, when set (-as-uid), is who the timed reads and commands run as.
var asUser *syscall.Credential

// becomeUser gives the calling (locked) thread, and only it, c's
// filesystem ids and no supplementary groups: the FUSE requests it makes
// carry them. A zero c is root again (the bench runs as root, with no
// supplementary groups of its own that matter here).
func becomeUser(c *syscall.Credential) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %v", e)
	}
	syscall.RawSyscall(syscall.SYS_SETFSGID, uintptr(c.Gid), 0, 0)
	syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(c.Uid), 0, 0)
	if got, _, _ := syscall.RawSyscall(syscall.SYS_SETFSUID, ^uintptr(0)&0xffffffff, 0, 0); uint32(got) != c.Uid {
		return fmt.Errorf("setfsuid(%d): still %d", c.Uid, got)
	}
	return nil
}
