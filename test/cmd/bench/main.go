// Command bench compares clamfuse with the native backing directory, with
// ClamFS (Debian's clamfs package) and with bare clamd (`clamfuse scan`,
// no FUSE) on the workloads of issue #3, and on the read-only ones with
// the FUSE floor (floorfs, the thinnest FUSE server: floor.go), then the
// two clamd transports (INSTREAM and FILDES) against each other on the
// first-open scans, then
// first opens after the prewarm walk (scan.prewarm) against those without
// it, then the cost of the freshness rules of issue #11 (content digests of
// small files on cached re-opens, the racy rule on opens right after a
// write), and writes the tables of medians to bench/RESULTS.md:
//
//	go run ./test/cmd/bench [-quick] [-dir /var/tmp/clamfuse-bench]
//
// or `make bench` / `make bench QUICK=1` (test/cmd/bench/bench.mk). It must
// run as root from the repository root: it drops the page cache, mounts
// FUSE filesystems, and builds bin/clamfuse there.
//
// It builds bin/clamfuse (no -race), starts a private clamd
// (test/clamdtest), creates the data set under -dir (reused by later runs),
// and runs every workload on every system in turn, A B C C B A, taking the
// median of -runs runs. Workloads that need uncached verdicts remount
// clamfuse and ClamFS before each run; the mount is not timed. Everything it
// starts is stopped and unmounted at the end, on error and on Ctrl-C; a
// mount whose requests hang is aborted through fusectl.
//
// Exit status: 0 when the table was produced (targets met or not), 1 when
// clamfuse failed a workload or the bench could not run, 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// options are the command-line flags.
type options struct {
	quick        bool
	runs         int
	dir          string
	out          string
	clamfsRuns   int
	clamfsBudget time.Duration
	runTimeout   time.Duration
	only         string // comma-separated workload ids, for development
	noClamFS     bool
	allowTmpfs   bool
	perfDir      string
	asUID        int      // -1: as root
	readdirPlus  string   // mount.readdirplus of clamfuse; "" for its default
	passthrough  string   // mount.passthrough of the clamfuse mounts
	args         []string // the command line's flags, for the report
}

func main() {
	if os.Getenv(pinEnv) != "" {
		os.Exit(pinMain())
	}
	os.Exit(run())
}

func run() int {
	var o options
	flag.BoolVar(&o.quick, "quick", os.Getenv("QUICK") == "1", "small sizes and 3 runs, under 2 minutes (default from QUICK=1)")
	flag.IntVar(&o.runs, "runs", 0, "runs per figure, the median is reported (default 5, 3 with -quick)")
	flag.StringVar(&o.dir, "dir", "/var/tmp/clamfuse-bench", "work directory: data set, mountpoints, clamd, logs (not on tmpfs)")
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "markdown report to write")
	flag.IntVar(&o.clamfsRuns, "clamfs-runs", 0, "at most this many ClamFS runs per workload (default -runs)")
	flag.DurationVar(&o.clamfsBudget, "clamfs-budget", 0, "stop ClamFS runs of a workload once they took this long in total (default 100s, 15s with -quick)")
	flag.DurationVar(&o.runTimeout, "run-timeout", 0, "abort one run after this long (default 5m, 1m with -quick)")
	flag.StringVar(&o.only, "only", "", "comma-separated workload ids to run (default all): "+strings.Join(workloadIDs(), ","))
	flag.BoolVar(&o.noClamFS, "no-clamfs", false, "skip ClamFS")
	flag.IntVar(&o.asUID, "as-uid", -1, "run the timed reads and commands as this uid (gid the same), through a clamfuse mount with allow_other, so that clamfuse acts as that user; skips ClamFS; for the reading workloads (-only cached-small,ls-warm,...)")
	flag.StringVar(&o.perfDir, "perf", "", "record `perf record -g` of clamfuse during its last run of each workload into this directory (that run is then perturbed)")
	flag.StringVar(&o.readdirPlus, "readdirplus", "", "clamfuse's mount.readdirplus (auto, on, off; default clamfuse's)")
	flag.StringVar(&o.passthrough, "passthrough", "auto", "mount.passthrough of the clamfuse mounts: auto (FUSE passthrough where the kernel grants it) or off")
	flag.BoolVar(&o.allowTmpfs, "allow-tmpfs", false, "allow a -dir on tmpfs (cold-cache figures are then meaningless)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./test/cmd/bench [flags]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		return 2
	}
	o.args = os.Args[1:]
	if o.asUID >= 0 {
		o.noClamFS = true
		asUser = &syscall.Credential{Uid: uint32(o.asUID), Gid: uint32(o.asUID)}
	}
	if o.runs == 0 {
		o.runs = 5
		if o.quick {
			o.runs = 3
		}
	}
	if o.clamfsRuns == 0 {
		o.clamfsRuns = o.runs
	}
	if o.clamfsBudget == 0 {
		o.clamfsBudget = 100 * time.Second
		if o.quick {
			o.clamfsBudget = 15 * time.Second
		}
	}
	if o.runTimeout == 0 {
		o.runTimeout = 5 * time.Minute
		if o.quick {
			o.runTimeout = time.Minute
		}
	}
	if o.runs < 1 || o.clamfsRuns < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs and -clamfs-runs must be at least 1")
		return 2
	}
	if o.only != "" {
		for _, id := range strings.Split(o.only, ",") {
			if workloadByID(id) == nil {
				fmt.Fprintf(os.Stderr, "bench: -only: unknown workload %q (have %s)\n", id, strings.Join(workloadIDs(), ","))
				return 2
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opts: o, ctx: ctx, sizes: sizesFor(o.quick)}

	// The first signal cancels the run and aborts our FUSE connections so
	// that no workload stays blocked; the deferred cleanup then unmounts
	// and stops everything. A second signal cleans up at once and exits.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		logf("%v: stopping; unmounting and stopping clamd (again to force)", s)
		cancel()
		b.abortAll()
		<-sigs
		logf("second signal: forcing cleanup")
		b.cleanup()
		os.Exit(130)
	}()

	err := b.main()
	b.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	if b.clamfuseFailed {
		fmt.Fprintln(os.Stderr, "bench: clamfuse failed some runs; see the report and the logs in", filepath.Join(o.dir, "logs"))
		return 1
	}
	return 0
}

// bench is one run of the benchmark.
type bench struct {
	opts  options
	ctx   context.Context
	sizes sizes

	repo     string // repository root (cwd)
	bin      string // bin/clamfuse
	floorBin string // floorfs, built into the work directory (floor.go)
	clamd    *clamdtest.Clamd
	data     dataset
	logDir   string
	systems  []*system
	extra    []*system // mounted for one comparison only (transports, prewarm); not table columns
	results  []*result
	rss      *rssResult
	trans    []*transportRow
	unseen   []*transportRow
	pre      []*prewarmRow
	fresh    []*freshRow
	info     machineInfo
	started  time.Time
	notes    []string // paragraphs at the end of the report
	loadAvg  string   // at the start

	clamfuseFailed bool
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func (b *bench) main() error {
	b.started = time.Now()
	if err := b.preflight(); err != nil {
		return err
	}
	if err := b.build(); err != nil {
		return err
	}
	var err error
	if b.data, err = makeDataset(b.ctx, filepath.Join(b.opts.dir, "src"), b.sizes); err != nil {
		return err
	}
	b.buildReader()
	if err := b.startClamd(); err != nil {
		return err
	}
	b.info = gatherInfo(b)
	b.loadAvg = loadAvg()
	if err := b.setupSystems(); err != nil {
		return err
	}
	for _, w := range workloads {
		if !b.selected(w.id) {
			continue
		}
		if err := b.ctx.Err(); err != nil {
			return err
		}
		r := b.runWorkload(w)
		b.results = append(b.results, r)
	}
	if b.selected("rss") {
		b.rss = b.runRSS()
	}
	if b.selected("transports") {
		b.trans = b.runTransports()
	}
	if b.selected("unseen") {
		b.unseen = b.runUnseen()
	}
	if b.selected("prewarm") {
		b.pre = b.runPrewarm()
	}
	if b.selected("freshness") {
		b.fresh = b.runFreshness()
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	report := b.report()
	fmt.Println(report)
	if err := os.MkdirAll(filepath.Dir(b.opts.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.opts.out, []byte(report), 0o644); err != nil {
		return err
	}
	logf("wrote %s (%v in all)", b.opts.out, time.Since(b.started).Round(time.Second))
	return nil
}

// note adds a paragraph to the report, once.
func (b *bench) note(text string) {
	for _, n := range b.notes {
		if n == text {
			return
		}
	}
	b.notes = append(b.notes, text)
}

func (b *bench) selected(id string) bool {
	if b.opts.only == "" {
		return true
	}
	for _, x := range strings.Split(b.opts.only, ",") {
		if x == id {
			return true
		}
	}
	return false
}

// preflight checks what the bench needs before it changes anything.
func (b *bench) preflight() error {
	if runtime.GOOS != "linux" {
		return errors.New("Linux only")
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it drops the page cache and mounts FUSE filesystems")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no FUSE: %v", err)
	}
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run from the repository root (where go.mod is)")
	}
	mod, _ := os.ReadFile("go.mod")
	if !strings.HasPrefix(string(mod), "module github.com/clamfuse/clamfuse\n") {
		return errors.New("run from the clamfuse repository root")
	}
	b.repo, _ = os.Getwd()
	for _, tool := range []string{"go", "dd", "ls", "find", "xargs", "stat", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found in PATH", tool)
		}
	}
	dir, err := filepath.Abs(b.opts.dir)
	if err != nil {
		return err
	}
	b.opts.dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %v", dir, err)
	}
	const tmpfsMagic = 0x01021994
	if st.Type == tmpfsMagic && !b.opts.allowTmpfs {
		return fmt.Errorf("%s is on tmpfs: the native side would read RAM and dropping the page cache would not apply; use -dir on a disk (e.g. /var/tmp/clamfuse-bench)", dir)
	}
	need := b.sizes.bytesNeeded()
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("%s: %d MiB free, the data set needs about %d MiB", dir, free>>20, need>>20)
	}
	if b.opts.perfDir != "" {
		if _, err := exec.LookPath("perf"); err != nil {
			return errors.New("-perf: perf not installed")
		}
		if b.opts.perfDir, err = filepath.Abs(b.opts.perfDir); err != nil {
			return err
		}
		if err := os.MkdirAll(b.opts.perfDir, 0o755); err != nil {
			return err
		}
	}
	b.logDir = filepath.Join(dir, "logs")
	if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return err
	}
	if err := ensureFusectl(); err != nil {
		return fmt.Errorf("fusectl (needed to abort hung mounts): %v", err)
	}
	// Mounts left by an earlier bench that was killed.
	for _, name := range []string{"clamfuse", "clamfs", "floor", "floor-pt"} {
		clearStaleMount(filepath.Join(dir, "mnt", name))
	}
	return nil
}

// build builds bin/clamfuse without -race, as users run it: pure Go
// (CGO_ENABLED=0), as the packages build it (packaging/packaging.mk). A
// cgo build also maps the C library and loader, some 2 MiB of the
// resident memory figure that the packaged binary does not have.
func (b *bench) build() error {
	b.bin = filepath.Join(b.repo, "bin", "clamfuse")
	logf("building %s", b.bin)
	cmd := exec.CommandContext(b.ctx, "go", "build", "-o", b.bin, "./cmd/clamfuse")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/clamfuse: %v", err)
	}
	return nil
}

func (b *bench) startClamd() error {
	logf("starting a private clamd in %s", filepath.Join(b.opts.dir, "clamd"))
	c, err := clamdtest.Start(filepath.Join(b.opts.dir, "clamd"), clamdtest.Options{
		MaxFileSize:     "2000M",
		StreamMaxLength: "2000M",
	})
	if err != nil {
		return err
	}
	b.clamd = c
	return nil
}

// cleanup unmounts every system and stops clamd. It is safe to call more
// than once and from the signal goroutine.
func (b *bench) cleanup() {
	for _, s := range b.allSystems() {
		s.teardown()
	}
	if b.clamd != nil {
		if err := b.clamd.Stop(); err != nil {
			logf("stopping clamd: %v", err)
		}
	}
	if b.data.scratch != "" {
		_ = os.RemoveAll(b.data.scratch)
	}
}

// allSystems is the table's systems and the extra ones.
func (b *bench) allSystems() []*system {
	return append(append([]*system(nil), b.systems...), b.extra...)
}

// abortAll aborts the FUSE connection of every live mount, which fails
// their pending requests with ENOTCONN.
func (b *bench) abortAll() {
	for _, s := range b.allSystems() {
		if m := s.current(); m != nil {
			m.abort()
		}
	}
}
