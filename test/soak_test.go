package test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
	"golang.org/x/sys/unix"
)

// soakDuration is how long the mixed soak runs: 10 s, 30 s with
// CLAMFUSE_SOAK=1.
func soakDuration() time.Duration {
	if os.Getenv("CLAMFUSE_SOAK") != "" {
		return 30 * time.Second
	}
	return 10 * time.Second
}

// waitScanCount polls clamd's scan count (its log, written just after
// each reply) until it reaches want, or 20 s pass, and returns it.
func waitScanCount(t *testing.T, c *clamdtest.Clamd, want int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := c.ScanCount()
		mustDo(t, err)
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSoakConcurrentOpensOneScan: 100 opens of one file no verdict covers
// yet, started together, cost exactly one clamd scan and all read the
// same bytes. A proxy holds that scan until the mount counts all 100
// opens as waiting on it, so none can come after it and scan again; and
// the proxy counts the scans as they arrive, so no settling time is
// needed to see an extra one.
func TestSoakConcurrentOpensOneScan(t *testing.T) {
	clamd := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, clamd)
	addr := opsFreePort(t)
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf("[metrics]\nlisten = %q\n", addr),
		Args: []string{"--clamd", proxy.Address(), "--timeout", "60s"}})
	misses := func() float64 { return opsScrape(t, "http://"+addr+"/metrics")["clamfuse_cache_misses_total"] }
	for round, size := range []int{8 << 20, 64 << 10} {
		name := fmt.Sprintf("shared-%d.bin", round)
		data := pseudoRandom(size, uint64(round+10))
		mustDo(t, os.WriteFile(m.Backing(name), data, 0o644))
		// Opens that come after the shared scan find its verdict cached
		// only once the file's times are old enough (cache/racy.go).
		waitTimesOld(t, m.Backing(name), fineSettle)
		before, missed := proxy.Scans(), misses()
		const n = 100
		var wg sync.WaitGroup
		errs := make([]error, n)
		proxy.Hold()
		m.Within(t, time.Minute, "100 concurrent opens", func() {
			for i := range n {
				wg.Go(func() {
					b, err := os.ReadFile(m.Path(name))
					if err == nil && !bytes.Equal(b, data) {
						err = fmt.Errorf("read %d bytes, not the file's", len(b))
					}
					errs[i] = err
				})
			}
			scan := proxy.Next(t, time.Minute)
			eventually(t, time.Minute, "all 100 opens waiting on the scan", func() bool { return misses() == missed+n })
			proxy.Release()
			if scan.Path != m.Backing(name) {
				t.Errorf("the scan held was of %s; want %s", scan.Path, m.Backing(name))
			}
			wg.Wait()
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("open %d of %d: %v", i, n, err)
			}
		}
		if got := proxy.Scans() - before; got != 1 {
			t.Errorf("%d concurrent opens of an unscanned %d-byte file cost %d clamd scans, want 1", n, size, got)
		}
	}
}

// TestSoakMixed runs 8 workers for soakDuration against one mount, each
// mixing reads and rewrites of clean and infected files. Each file's
// class never changes: a writer replaces a clean file with other clean
// bytes, an infected one with other infected bytes, by writing a
// temporary file through the mount and renaming it over the old one. So
// every open of a clean file must succeed and read clean bytes, and every
// open of an infected file must be denied: zero exceptions either way.
func TestSoakMixed(t *testing.T) {
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", clamd.Address(), "--timeout", "60s"}})
	const files = 8
	marker := clamdtest.Marker()
	content := func(rng *rand.Rand, infected bool) []byte {
		b := make([]byte, 1+rng.IntN(200<<10))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if infected {
			b = append(b, marker...)
			off := rng.IntN(len(b) - len(marker) + 1)
			copy(b[off:], marker)
		}
		return b
	}
	name := func(infected bool, i int) string {
		if infected {
			return fmt.Sprintf("infected-%d", i)
		}
		return fmt.Sprintf("clean-%d", i)
	}
	rng0 := rand.New(rand.NewPCG(1, 2))
	for i := range files {
		for _, inf := range []bool{false, true} {
			mustDo(t, os.WriteFile(m.Backing(name(inf, i)), content(rng0, inf), 0o644))
		}
	}

	var (
		stop                                      = make(chan struct{})
		wg                                        sync.WaitGroup
		cleanOK, infectedDenied, rewrites, others atomic.Int64
		failures                                  sync.Map
	)
	fail := func(format string, args ...any) { failures.Store(fmt.Sprintf(format, args...), true) }
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				inf, i := rng.IntN(2) == 0, rng.IntN(files)
				p := m.Path(name(inf, i))
				if rng.IntN(10) < 3 {
					tmp := m.Path(fmt.Sprintf(".tmp-%d-%d", w, seq))
					if err := os.WriteFile(tmp, content(rng, inf), 0o644); err != nil {
						fail("write %s: %v", tmp, err)
						continue
					}
					if err := os.Rename(tmp, p); err != nil {
						fail("rename over %s: %v", p, err)
						continue
					}
					rewrites.Add(1)
					continue
				}
				b, err := os.ReadFile(p)
				switch {
				case err == nil && inf:
					fail("infected file %s opened and read (%d bytes)", name(inf, i), len(b))
				case err == nil && bytes.Contains(b, marker):
					fail("clean file %s read with the marker in it", name(inf, i))
				case err == nil:
					cleanOK.Add(1)
				case errors.Is(err, syscall.EACCES) && inf:
					infectedDenied.Add(1)
				case errors.Is(err, syscall.EACCES):
					fail("clean file %s denied", name(inf, i))
				default:
					others.Add(1)
					fail("open of %s: %v", name(inf, i), err)
				}
			}
		}()
	}
	d := soakDuration()
	m.Within(t, d+2*time.Minute, "soak", func() {
		time.Sleep(d)
		close(stop)
		wg.Wait()
	})
	t.Logf("%v: %d clean reads, %d infected opens denied, %d rewrites, %d other errors",
		d, cleanOK.Load(), infectedDenied.Load(), rewrites.Load(), others.Load())
	n := 0
	failures.Range(func(k, _ any) bool {
		if n++; n <= 20 {
			t.Error(k)
		}
		return true
	})
	if cleanOK.Load() == 0 || infectedDenied.Load() == 0 || rewrites.Load() == 0 {
		t.Errorf("the soak did not exercise every path")
	}
}

// procStats are the resources of a process seen from outside.
type procStats struct {
	fds, threads int
	rssKiB       int
}

func readProcStats(t *testing.T, pid int) procStats {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	mustDo(t, err)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	mustDo(t, err)
	s := procStats{fds: len(ents)}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Threads:":
			s.threads, _ = strconv.Atoi(f[1])
		case "VmRSS:":
			s.rssKiB, _ = strconv.Atoi(f[1])
		}
	}
	return s
}

// TestSoakResourcesStable: 10 000 opens (clean reads, cached and not,
// denials of infected files, misses, directory listings, files written
// and scanned after their write) leave clamfuse with the descriptors and
// threads it had after a warm-up with the same concurrency, and with
// bounded memory; and once the scans after write are over, clamfuse holds
// no backing file open for reading or writing.
func TestSoakResourcesStable(t *testing.T) {
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", clamd.Address(), "--timeout", "60s"}})
	pid := m.Cmd.Process.Pid
	const nfiles = 50
	for i := range nfiles {
		data := pseudoRandom(1000+i*100, uint64(i))
		if i%10 == 9 {
			data = append(data, clamdtest.Marker()...)
		}
		mustDo(t, os.WriteFile(m.Backing(fmt.Sprintf("f%02d", i)), data, 0o644))
	}
	mustDo(t, os.MkdirAll(m.Backing("dir/sub"), 0o755))
	var unexpected atomic.Int64
	var seq atomic.Int64
	work := func(opens int) {
		var wg sync.WaitGroup
		per := opens / 8
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range per {
					k := (w*per + j) % (nfiles + 10)
					var err error
					switch {
					case k < nfiles:
						_, err = os.ReadFile(m.Path(fmt.Sprintf("f%02d", k)))
						if k%10 == 9 {
							if errors.Is(err, syscall.EACCES) {
								err = nil
							} else {
								err = fmt.Errorf("infected f%02d: %v", k, err)
							}
						}
					case k < nfiles+3:
						_, err = os.ReadDir(m.Path("dir"))
					case k < nfiles+5:
						_, err = os.ReadFile(m.Path("missing"))
						if errors.Is(err, os.ErrNotExist) {
							err = nil
						}
					default:
						// A new file each time: written, then scanned.
						p := m.Path(fmt.Sprintf("dir/new-%d", seq.Add(1)))
						if err = os.WriteFile(p, pseudoRandom(5000, uint64(k)), 0o644); err == nil {
							_, err = os.ReadFile(p)
						}
						os.Remove(p)
					}
					if err != nil {
						unexpected.Add(1)
					}
				}
			}()
		}
		wg.Wait()
	}
	// Background scans of the files just written hold those files open
	// until they end: wait for none to be held, which is also the check
	// that none stays held (a leak).
	idle := func(when string) {
		t.Helper()
		var held []string
		deadline := time.Now().Add(30 * time.Second)
		for held = heldFiles(t, pid, m.Source); len(held) > 0; held = heldFiles(t, pid, m.Source) {
			if time.Now().After(deadline) {
				t.Fatalf("%s, with nothing open through the mount, clamfuse still holds %d backing files open after 30s: %s", when, len(held), strings.Join(held, " "))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	m.Within(t, 5*time.Minute, "2 000 opens", func() { work(2000) }) // warm-up: the same concurrency, so thread pools fill
	idle("after the warm-up")
	before := readProcStats(t, pid)
	start := time.Now()
	m.Within(t, 5*time.Minute, "10 000 opens", func() { work(10000) })
	elapsed := time.Since(start)
	idle("after 10 000 opens")
	after := readProcStats(t, pid)
	t.Logf("before %+v, after 10 000 opens in %v: %+v", before, elapsed.Round(time.Millisecond), after)
	t.Logf("clamfuse descriptors, idle: %s", strings.Join(fdTargets(t, pid), " "))
	if n := unexpected.Load(); n > 0 {
		t.Errorf("%d opens went wrong", n)
	}
	if after.fds > before.fds+2 {
		t.Errorf("clamfuse holds %d descriptors after 10 000 opens, %d before: a leak", after.fds, before.fds)
	}
	if after.threads > before.threads+4 {
		t.Errorf("clamfuse runs %d threads after 10 000 opens, %d before", after.threads, before.threads)
	}
	if after.rssKiB > before.rssKiB+64<<10 {
		t.Errorf("clamfuse RSS grew from %d KiB to %d KiB over 10 000 opens", before.rssKiB, after.rssKiB)
	}
}

// fdTargets lists the descriptors of process pid as "N->target".
func fdTargets(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	mustDo(t, err)
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+"->"+l)
	}
	return out
}

// heldFiles lists the descriptors of process pid open for reading or
// writing (O_PATH ones, which can do neither, do not count) on regular
// files under dir, deleted ones included: with nothing open through the
// mount and no scan running, clamfuse should hold none.
func heldFiles(t *testing.T, pid int, dir string) []string {
	t.Helper()
	fds := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fds)
	mustDo(t, err)
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fds, e.Name()))
		if err != nil || !strings.HasPrefix(strings.TrimSuffix(target, " (deleted)"), dir+"/") {
			continue // closed meanwhile, or not a backing file
		}
		fi, err := os.Stat(filepath.Join(fds, e.Name()))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		var flags uint64
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			}
		}
		if flags&unix.O_PATH == 0 {
			out = append(out, e.Name()+"->"+target)
		}
	}
	return out
}
