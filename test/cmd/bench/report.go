package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cpu is CPU time (user + system) consumed so far.
type cpu struct {
	driver time.Duration // this process and its waited-for children
	server time.Duration // the FUSE server of the system, if any
	clamd  time.Duration
}

func (b *bench) cpuSnapshot(s *system) cpu {
	var c cpu
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	c.driver = rusageCPU(&self) + rusageCPU(&kids)
	if m := s.current(); m != nil {
		c.server = procCPU(m.pid())
	}
	c.clamd = procCPU(b.clamdPid())
	return c
}

// since is the CPU time used from before to c.
func (c cpu) since(before cpu) cpu {
	return cpu{driver: c.driver - before.driver, server: c.server - before.server, clamd: c.clamd - before.clamd}
}

func rusageCPU(r *syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// procCPU reads utime + stime of a live process from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // sysconf(_SC_CLK_TCK) on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

func (b *bench) clamdPid() int { return clamdPidIn(b.clamd.Dir) }

// clamdPidIn is the pid of the clamdtest clamd whose directory is dir.
func clamdPidIn(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, "clamd.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// procStatusKiB reads a "Vm...:  N kB" line of /proc/PID/status.
func procStatusKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// rssResult is the resident memory figure.
type rssResult struct {
	files                int
	baseKiB, rssKiB, hwm int64
	took                 time.Duration
	estimateKiB          int64 // rssKiB, or extrapolated to rssTarget
	extrapolated         bool
	forgotKiB            int64 // after the kernel forgot the inodes
	pinnedKiB            int64 // after looking the files up (pinFiles), before opening them
	heap                 heapStats
	heapTop              string // the heap profile's top entries (go tool pprof -top)
	heapProfile          string // where the heap profile is saved

	err string
}

// heapStats are the Go runtime's figures of the heap profile's debug=1
// form, in bytes.
type heapStats struct {
	heapAlloc, heapInuse, heapIdle, heapReleased, nextGC int64
}

// freePort returns a TCP port of 127.0.0.1 free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// fetchHeap saves clamfuse's heap profile (served on its metrics
// address) to path and returns the runtime's heap figures and the
// profile's top entries.
func (b *bench) fetchHeap(addr, path string) (heapStats, string, error) {
	var hs heapStats
	get := func(url string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s", url, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	text, err := get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		return hs, "", err
	}
	for _, l := range strings.Split(string(text), "\n") {
		for name, p := range map[string]*int64{"HeapAlloc": &hs.heapAlloc, "HeapInuse": &hs.heapInuse,
			"HeapIdle": &hs.heapIdle, "HeapReleased": &hs.heapReleased, "NextGC": &hs.nextGC} {
			if v, ok := strings.CutPrefix(l, "# "+name+" = "); ok {
				*p, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	prof, err := get("http://" + addr + "/debug/pprof/heap")
	if err != nil {
		return hs, "", err
	}
	if err := os.WriteFile(path, prof, 0o644); err != nil {
		return hs, "", err
	}
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=10", "-sample_index=inuse_space", b.bin, path).Output()
	if err != nil {
		return hs, "", fmt.Errorf("go tool pprof: %v", err)
	}
	var top []string
	started := false
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			started = true
		}
		if started && strings.TrimSpace(l) != "" {
			top = append(top, l)
		}
	}
	return hs, strings.Join(top, "\n"), nil
}

// runRSS opens every file of the "many" set once through a fresh
// clamfuse mount (8 readers), then reads clamfuse's VmRSS.
func (b *bench) runRSS() *rssResult {
	r := &rssResult{files: b.sizes.rssFiles}
	// The table's config, and the metrics address for the heap profile.
	addr, err := freePort()
	if err != nil {
		r.err = err.Error()
		return r
	}
	cf, err := b.extraClamfuse("rss", "", clamfuseConf{metricsListen: addr})
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer b.dropExtra()
	logf("resident memory: opening %d files once through a fresh clamfuse mount", r.files)
	if err := cf.ensure(true); err != nil {
		r.err = "mount: " + err.Error()
		b.clamfuseFailed = true
		return r
	}
	pid := cf.current().pid()
	time.Sleep(200 * time.Millisecond)
	if r.baseKiB, err = procStatusKiB(pid, "VmRSS"); err != nil {
		r.err = err.Error()
		return r
	}
	timeout := 4 * b.opts.runTimeout
	pins, err := pinFiles(cf.root(), b.data.manyF)
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer pins.release()
	if r.pinnedKiB, err = procStatusKiB(pid, "VmRSS"); err != nil {
		r.err = err.Error()
		return r
	}
	start := time.Now()
	err = withTimeout(b.ctx, timeout, cf, func(ctx context.Context) error {
		return readAll(ctx, cf, b.data.manyF, parallelReaders)
	})
	r.took = time.Since(start)
	if err != nil {
		r.err = err.Error()
		b.clamfuseFailed = true
		return r
	}
	if r.rssKiB, err = procStatusKiB(pid, "VmRSS"); err != nil {
		r.err = err.Error()
		return r
	}
	r.hwm, _ = procStatusKiB(pid, "VmHWM")
	r.estimateKiB = r.rssKiB
	r.heapProfile = filepath.Join(b.logDir, "rss-heap.pb.gz")
	if hs, top, err := b.fetchHeap(addr, r.heapProfile); err != nil {
		logf("  heap profile: %v", err)
		r.heapProfile = ""
	} else {
		r.heap, r.heapTop = hs, top
	}
	// For the reading of the figure: how much of it is the nodes of the
	// inodes the kernel still holds, rather than the verdicts. Dropping
	// dentries and inodes makes the kernel send FORGET for each.
	pins.release()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err == nil {
		time.Sleep(2 * time.Second)
		r.forgotKiB, _ = procStatusKiB(pid, "VmRSS")
	}
	if r.files < b.sizes.rssTarget {
		r.extrapolated = true
		r.estimateKiB = r.baseKiB + (r.rssKiB-r.baseKiB)*int64(b.sizes.rssTarget)/int64(r.files)
	}
	logf("  VmRSS %d KiB after mount, %d KiB after %d files (%v, %.0f files/s), %d KiB after the kernel forgot the inodes",
		r.baseKiB, r.rssKiB, r.files, r.took.Round(time.Millisecond), float64(r.files)/r.took.Seconds(), r.forgotKiB)

	return r
}

// machineInfo describes where the figures come from.
type machineInfo struct {
	cpus, cpuModel, memory, kernel, fsType string
	clamd, clamfs, goVersion, clamfuse     string
}

func gatherInfo(b *bench) machineInfo {
	out := func(name string, args ...string) string {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		o, err := exec.CommandContext(ctx, name, args...).Output()
		if err != nil {
			return "unknown (" + err.Error() + ")"
		}
		return strings.TrimSpace(string(o))
	}
	var info machineInfo
	info.cpus = strconv.Itoa(runtime.NumCPU())
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				info.cpuModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if kib, err := procMeminfoKiB("MemTotal"); err == nil {
		info.memory = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		info.kernel = unix.ByteSliceToString(uts.Release[:])
	}
	info.fsType = out("stat", "-f", "-c", "%T", b.opts.dir)
	info.clamd = out("clamd", "--version")
	info.clamfs = out("dpkg-query", "-W", "-f", "${Version}", "clamfs")
	info.goVersion = out("go", "version")
	info.clamfuse = out(b.bin, "version")
	return info
}

func procMeminfoKiB(field string) (int64, error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/meminfo", field)
}

// Target checks.

func (b *bench) sys(k kind) *system {
	for _, s := range b.systems {
		if s.kind == k {
			return s
		}
	}
	return nil
}

// ratioTo: clamfuse's median time over the reference system's, at most limit.
func ratioTo(ref kind, limit float64) func(*bench, *result) evaluation {
	return func(b *bench, r *result) evaluation {
		refName := b.sys(ref).name
		var e evaluation
		rm, ok := r.median(ref)
		if !ok {
			e.value, e.clamfs, e.met = "n/a", "n/a", "n/a"
			return e
		}
		e.value, e.met = "n/a", "n/a"
		if cm, ok := r.median(kindClamfuse); ok {
			x := ratio(cm, rm)
			e.value = fmt.Sprintf("%.2fx %s", x, refName)
			e.met = yesNo(x <= limit)
		}
		e.clamfs = "n/a"
		if fm, ok := r.median(kindClamFS); ok {
			e.clamfs = fmt.Sprintf("%.2fx %s", ratio(fm, rm), refName)
		}
		return e
	}
}

// speedupOver: the throughput of this workload over that of workload id
// on the same files, at least limit.
func speedupOver(id string, limit float64) func(*bench, *result) evaluation {
	return func(b *bench, r *result) evaluation {
		var seq *result
		for _, x := range b.results {
			if x.w.id == id {
				seq = x
			}
		}
		e := evaluation{value: "n/a", clamfs: "n/a", met: "n/a"}
		if seq == nil {
			e.value = "n/a (needs " + id + ")"
			return e
		}
		speedup := func(k kind) (float64, bool) {
			s, ok1 := seq.median(k)
			p, ok2 := r.median(k)
			if !ok1 || !ok2 {
				return 0, false
			}
			return ratio(s, p), true
		}
		if x, ok := speedup(kindClamfuse); ok {
			e.value = fmt.Sprintf("%.2fx sequential", x)
			e.met = yesNo(x >= limit)
		}
		if x, ok := speedup(kindClamFS); ok {
			e.clamfs = fmt.Sprintf("%.2fx sequential", x)
		}
		return e
	}
}

// ratioToOwnAux: the first timing of each run over the second (the same
// opens, now cached), at most limit.
func ratioToOwnAux(limit float64) func(*bench, *result) evaluation {
	return func(b *bench, r *result) evaluation {
		own := func(k kind) (float64, bool) {
			s := r.per[k]
			if s == nil || s.na != "" || len(s.wall) == 0 {
				return 0, false
			}
			return ratio(median(s.wall), median(s.aux)), true
		}
		e := evaluation{value: "n/a", clamfs: "n/a", met: "n/a"}
		if x, ok := own(kindClamfuse); ok {
			e.value = fmt.Sprintf("%.2fx its cached open", x)
			e.met = yesNo(x <= limit)
		}
		if x, ok := own(kindClamFS); ok {
			e.clamfs = fmt.Sprintf("%.2fx its cached open", x)
		}
		return e
	}
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**NO**"
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Formatting.

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// report renders the markdown report.
func (b *bench) report() string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	mode := "full"
	if b.opts.quick {
		mode = "QUICK (reduced sizes and runs: indicative only)"
	}
	p("# clamfuse benchmark results\n\n")
	p("Produced by `make bench` (`go run ./test/cmd/bench`) on %s; mode: %s; %d runs per figure (median), interleaved across systems (in reverse order every other run); %v in all.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), mode, b.opts.runs, time.Since(b.started).Round(time.Second))
	if len(b.opts.args) > 0 {
		p("- flags: `%s`\n", strings.Join(b.opts.args, " "))
	}
	i := b.info
	p("- machine: %s CPUs (%s), %s RAM; kernel %s; data on %s (%s); load average %s at the start, %s at the end (other work on the machine makes the figures noisy)\n",
		i.cpus, i.cpuModel, i.memory, i.kernel, b.opts.dir, i.fsType, b.loadAvg, loadAvg())
	p("- clamd: %s (private instance, test signatures only, StreamMaxLength/MaxFileSize/MaxScanSize 2000M, MaxThreads 8)\n", i.clamd)
	p("- ClamFS: Debian clamfs %s, mode=\"stream\" (INSTREAM), same clamd, no extension lists, no size limit, cache entries=65536 expire=3h\n", i.clamfs)
	p("- clamfuse: %s, built without -race; config: defaults (max_concurrent 4, cache 100000 entries, transport auto: fildes on the unix socket) but max_size 2000MiB, timeout 10m%s\n", i.clamfuse, b.configFlags())
	p("- %s\n\n", i.goVersion)

	p("| workload | native | clamfuse | ClamFS | bare clamd | clamfuse / native | clamfuse / ClamFS | target | clamfuse | met | ClamFS, same measure |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---|---|:-:|---|\n")
	var foot []string
	note := func(text string) string {
		for i, f := range foot {
			if f == text {
				return fmt.Sprintf("[%d]", i+1)
			}
		}
		foot = append(foot, text)
		return fmt.Sprintf("[%d]", len(foot))
	}
	for _, r := range b.results {
		cell := func(k kind) string {
			s := r.per[k]
			switch {
			case s == nil:
				return "n/a"
			case s.na == "-":
				return "-"
			case s.na != "":
				return "n/a " + note(b.sys(k).name+", "+r.w.id+": "+s.na)
			case len(s.wall) == 0:
				return "n/a"
			}
			c := fmtDur(median(s.wall))
			if r.w.id == "after-write" {
				c += " (cached " + fmtDur(median(s.aux)) + ")"
			}
			if len(s.wall) < b.opts.runs {
				c += fmt.Sprintf(" (%d runs)", len(s.wall))
			}
			if s.capped && k == kindClamFS {
				c += " " + note(fmt.Sprintf("ClamFS runs capped at %d or %v per workload to bound the bench's duration", b.opts.clamfsRuns, b.opts.clamfsBudget))
			}
			return c
		}
		rel := func(k kind) string {
			cm, ok1 := r.median(kindClamfuse)
			om, ok2 := r.median(k)
			if !ok1 || !ok2 {
				return "n/a"
			}
			return fmt.Sprintf("%.2fx", ratio(cm, om))
		}
		e := r.w.eval(b, r)
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			strings.ReplaceAll(r.title, "|", "\\|"), cell(kindNative), cell(kindClamfuse), cell(kindClamFS), cell(kindBare),
			rel(kindNative), rel(kindClamFS), r.w.target, e.value, e.met, e.clamfs)
	}
	if r := b.rss; r != nil {
		title := fmt.Sprintf("resident memory with %d cached verdicts", b.sizes.rssTarget)
		val, met := "", "n/a"
		if r.err != "" {
			val = "n/a " + note("RSS: "+r.err)
		} else {
			val = mib(r.estimateKiB)
			if r.extrapolated {
				val = fmt.Sprintf("%s **extrapolated** from %s with %d verdicts (%s after mount)", val, mib(r.rssKiB), r.files, mib(r.baseKiB))
			} else {
				val = fmt.Sprintf("%s (%s after mount)", val, mib(r.baseKiB))
			}
			met = yesNo(r.estimateKiB <= 48<<10)
		}
		p("| %s | - | %s | not measured | - | - | - | <= 48 MiB | VmRSS of clamfuse | %s | - |\n", title, val, met)
	}
	p("\n")
	for i, f := range foot {
		p("[%d] %s\n\n", i+1, f)
	}

	b.reportFloor(p)
	b.reportFloorPT(p)
	b.reportTransports(p)
	b.reportUnseen(p)
	b.reportPrewarm(p)
	b.reportFreshness(p)

	p("## How each figure is measured\n\n")
	p("- Every figure is the median wall time of the workload alone; mounting, priming and dropping caches are not timed. Runs alternate between systems (native, clamfuse, ClamFS, bare clamd, the floors, then the same in reverse order, and again), so that no system always follows the same other one. Before each run the bench waits until clamd and the FUSE servers are idle (clamfuse scans files written through it in the background after they are closed).\n")
	p("- Files are read as cat reads them, system call for system call: open, fstat, fadvise(SEQUENTIAL), read 128 KiB at a time to EOF, close, by catread (`test/cmd/bench/reader/catread.c`, compiled with `gcc -O2` into the work directory at the start; one thread per reader), which times itself from its first open to its last close. Not the bench's own Go code: a Go reader blocked in an open that waits for a scan also pays its runtime's thread hand-offs (measured here: about 5 context switches and 55 µs of CPU per first open through clamfuse more than a C reader), on the CPUs the server and clamd use; nor os.Open, which would also register each FUSE file with epoll, which no cat does and a local file cannot be. `ls`, `find | xargs stat` and `dd` are the system commands, output to /dev/null.\n")
	p("- **first open** rows: the page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) and clamfuse and ClamFS are remounted before each run, so every open needs a scan. The bare clamd column is `bin/clamfuse scan` of the same files (`--jobs 1` for the sequential rows, `--jobs %d` for the parallel one), with no FUSE, and the same transport as clamfuse (auto: fildes). ClamFS streams with INSTREAM. All three use the same clamd, which keeps a cache of the files it found clean (its default): from the second run on it answers from that cache once it has read and hashed a file, for every system alike, so these rows time clamd's hash and clamfuse's path around it, not a scan; the section \"First opens of files clamd has not seen\" times scans.\n", parallelReaders)
	p("- **cached** rows: the files were read once through the same mount before the first timed run (verdicts cached, page cache warm); nothing is dropped between runs; the big file of the cached re-read is read once more (untimed) before each run, so that a page cache dropped meanwhile by something else on the machine does not make the run read the disk.\n")
	p("- **ls / stat** rows: warm = the tree was listed once through the same mount before and nothing is dropped, but each run on a FUSE system starts at least 1.2 s after that system last served the tree, so the kernel's FUSE entry and attribute timeouts (1 s in clamfuse and ClamFS) have expired and the FUSE server is asked (otherwise a warm figure depends on whether the previous run ended less than a second before); cold = the page cache, dentries and inodes are dropped before each run (no remount).\n")
	if fl := b.sys(kindFloor); fl != nil {
		p("- **FUSE floor**: floorfs (`%s`, compiled with `gcc -O2` into the work directory at the start), mounted on the data set like clamfuse and run interleaved with the other systems on the read-only rows only. It is a single-threaded C program over raw /dev/fuse (no libfuse) that reads one request, answers it and writes the reply: LOOKUP and GETATTR are an fstatat of the backing path, OPEN an open(2) of the backing file answered with FOPEN_KEEP_CACHE, READ a pread, READDIRPLUS an fstatat per entry whose inode the kernel does not hold (the names alone for those it holds, as clamfuse does: attributes sent again for a held inode make the kernel drop its cached ACLs and ask GETXATTR again), FORGET counted; GETXATTR is ENODATA (EOPNOTSUPP for security.selinux), FLUSH ENOSYS, as clamfuse answers them. It negotiates what clamfuse negotiates: ASYNC_READ, BIG_WRITES, PARALLEL_DIROPS, MAX_PAGES (256 pages, max_write 1 MiB), POSIX_ACL and DONT_MASK (so the kernel asks GETXATTR for each file's ACL once, as with clamfuse), DO_READDIRPLUS with READDIRPLUS_AUTO, CACHE_SYMLINKS, HAS_EXPIRE_ONLY, max_readahead 1 MiB (and the mount's read_ahead_kb raised to 1024, as clamfuse does), default_permissions and allow_other; names and attributes trusted for 1 hour, as clamfuse with invalidation (so its warm rows are not made to wait either). It is not: FUSE passthrough (not asked for), scanning (its first open is an open without a scan), acting as the caller (no fsuid/fsgid switching: it runs as root), a watcher of the backing directory, multithreaded, or written in Go. Being single-threaded it serves one request at a time: where callers run at once and the server waits for the disk (the cold rows; `find | xargs stat` runs two processes), a multithreaded server can overlap what the floor serialises, so there the floor is not a strict lower bound. Its server CPU is in the table below.\n", floorSource)
	}
	if fl := b.sys(kindFloorPT); fl != nil && fl.broken == "" {
		p("- **passthrough floor**: floorfs -p, the FUSE floor with FUSE passthrough negotiated (max_stack_depth 1), run interleaved with the other systems on the rows that read or write file data (cached-big, write). Each open or create of a regular file registers the descriptor it opened (FUSE_DEV_IOC_BACKING_OPEN, as root) and answers FOPEN_PASSTHROUGH with its id, the opens of one inode sharing one id while any is open, closed (FUSE_DEV_IOC_BACKING_CLOSE) at the last release; CREATE opens with O_CREAT and the mode less the umask, UNLINK unlinks, SETATTR truncates, chmods and sets times, FSYNC fsyncs the descriptor. An open of a file it cannot register fails: it never serves data itself.\n")
	}
	p("- **write**: `dd if=/dev/zero bs=1M conv=fsync` to a new file; the previous file is removed and caches dropped before each run.\n")
	p("- **first open right after write**: the files are written (created, written, closed) through the mount, untimed; then all are opened and read (first figure), then again (the cached open it is compared with).\n")
	p("- **resident memory**: VmRSS from /proc/PID/status of a fresh clamfuse (the table's config, and a metrics listener for the heap profile) after opening %d distinct non-empty files once (8 readers); one measurement. Before the opens every file is looked up and held with an O_PATH descriptor (no OPEN, no handle in clamfuse) by helper processes until the opens are measured, so that the kernel keeps every inode, as it does on an idle machine, whatever `drop_caches` other processes run meanwhile (on a shared machine they made the kernel forget inodes, and clamfuse its nodes, halfway through).", b.sizes.rssFiles)
	if b.rss != nil && b.rss.extrapolated {
		p(" With QUICK the figure is extrapolated linearly: RSS after mount + (measured growth) x %d / %d.", b.sizes.rssTarget, b.sizes.rssFiles)
	}
	if b.rss != nil && b.rss.err == "" {
		p(" Opening them took %v (%.0f first opens/s). VmRSS was %s after mount, %s once the files were looked up, %s after the opens (peak %s), and %s 2 s after the descriptors were closed and `echo 2 > drop_caches` made the kernel forget the inodes (clamfuse then drops its nodes; the Go runtime returns freed memory to the OS only gradually).",
			b.rss.took.Round(time.Millisecond), float64(b.rss.files)/b.rss.took.Seconds(),
			mib(b.rss.baseKiB), mib(b.rss.pinnedKiB), mib(b.rss.rssKiB), mib(b.rss.hwm), mib(b.rss.forgotKiB))
		if h := b.rss.heap; h.nextGC > 0 {
			p(" The Go heap after the opens: %s allocated (live and not yet collected), %s in use, %s idle of which %s returned to the OS, next collection at %s (clamfuse paces the collector to let the heap grow by a quarter of what the last collection found live once that is over 4 MiB, by as much below, unless GOGC is set; the runtime keeps about that much mapped).",
				mib(h.heapAlloc>>10), mib(h.heapInuse>>10), mib(h.heapIdle>>10), mib(h.heapReleased>>10), mib(h.nextGC>>10))
		}
		if b.rss.heapTop != "" {
			p(" The heap profile (%s, sampled, live at the last collection), top entries:\n\n```\n%s\n```\n", b.rss.heapProfile, b.rss.heapTop)
		}
	}
	p("\n")
	if len(b.pre) > 0 {
		p("- **prewarm**: clamfuse is mounted on the directory of the %d small files alone (the prewarm walk covers the whole mount), log level info, otherwise the config of the table; once with `scan.prewarm` = true, once with false, alternating, in reverse order every other run, each mounted afresh before each run (no cached verdicts). With prewarm the page cache is dropped before the mount, so the walk reads from the disk, and the bench waits for the `prewarm done` log line (untimed; its duration, the walk's, is the prewarm figure, and every file must be counted scanned or cached, without errors); then, after the wait for idle, the page cache is dropped and every file is opened and read once, sequentially (first open), then once more through the same mount (cached re-open: verdicts cached, page cache warm). clamd CPU during the first open shows whether it scanned.\n", b.sizes.smallFiles)
	}
	p("\n")

	p("## Where the time goes (median CPU time per run)\n\n")
	p("driver = the bench process and the commands it runs (cat-like reads, ls, find, dd); server = the FUSE server (clamfuse, clamfs or floorfs) or, for bare clamd, the `clamfuse scan` process; clamd = the clamd daemon. From getrusage and /proc/PID/stat (10 ms resolution).\n\n")
	p("| workload | system | wall | driver CPU | server CPU | clamd CPU |\n|---|---|---:|---:|---:|---:|\n")
	for _, r := range b.results {
		for _, s := range b.systems {
			se := r.per[s.kind]
			if se == nil || se.na != "" || len(se.wall) == 0 {
				continue
			}
			server := fmtDur(median(se.cpuServer))
			if s.kind == kindNative {
				server = "-"
			}
			p("| %s | %s | %s | %s | %s | %s |\n", r.w.id, s.name, fmtDur(median(se.wall)),
				fmtDur(median(se.cpuDriver)), server, fmtDur(median(se.cpuClamd)))
		}
	}
	p("\n")
	for _, n := range b.notes {
		p("%s\n\n", n)
	}
	return w.String()
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// configFlags names the settings of the clamfuse mounts that the command
// line changed from clamfuse's defaults, for the report's header.
func (b *bench) configFlags() string {
	var s string
	if b.opts.passthrough != "auto" {
		s += fmt.Sprintf(", mount.passthrough %q", b.opts.passthrough)
	}
	if b.opts.readdirPlus != "" {
		s += fmt.Sprintf(", mount.readdirplus %q", b.opts.readdirPlus)
	}
	return s
}
