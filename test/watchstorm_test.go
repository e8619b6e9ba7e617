package test

// A storm of changes made directly in the backing directory while
// processes look the same names up through the mount: once the storm
// stops, every name must show through the mount what the backing
// directory has (inode and type), within watchBound, although the
// kernel may trust names for an hour. The hostile FIFO swap
// (testHostileSwapToFIFO) once left readers parked on a FIFO that no
// name through the mount led to any more.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// stormCase is one kind of storm on the names "a" and "b".
type stormCase struct {
	name  string
	setup func(t *testing.T, src string)
	step  func(src string, i int) error // one change, made directly
}

func stormCases() []stormCase {
	exchange := func(src string, _ int) error {
		return unix.Renameat2(unix.AT_FDCWD, filepath.Join(src, "a"), unix.AT_FDCWD, filepath.Join(src, "b"), unix.RENAME_EXCHANGE)
	}
	return []stormCase{
		{"exchange-regular", func(t *testing.T, src string) {
			putFile(t, filepath.Join(src, "a"), []byte("a\n"))
			putFile(t, filepath.Join(src, "b"), []byte("b\n"))
		}, exchange},
		{"exchange-fifo", func(t *testing.T, src string) {
			putFile(t, filepath.Join(src, "a"), nil)
			mustDo(t, unix.Mkfifo(filepath.Join(src, "b"), 0o644))
		}, exchange},
		{"rename-over", func(t *testing.T, src string) {
			putFile(t, filepath.Join(src, "a"), []byte("a\n"))
			putFile(t, filepath.Join(src, "b"), []byte("b\n"))
		}, func(src string, i int) error {
			// A new file over one name, or the other name moved over
			// it and recreated: new inodes, whose numbers the backing
			// filesystem may reuse at once.
			to := []string{"a", "b"}[i%2]
			tmp := filepath.Join(src, "new")
			fd, err := unix.Open(tmp, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			unix.Close(fd)
			if i%3 == 0 {
				if err := unix.Rename(filepath.Join(src, to), tmp); err != nil {
					return err
				}
				fd, err := unix.Open(filepath.Join(src, to), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err != nil {
					return err
				}
				unix.Close(fd)
				return unix.Unlink(tmp)
			}
			return unix.Rename(tmp, filepath.Join(src, to))
		}},
	}
}

// stormView is what lstat shows of names beneath root: inode and type.
func stormView(root string, names []string) map[string]string {
	v := make(map[string]string, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, n), &st); err != nil {
			v[n] = errnoName(err)
			continue
		}
		v[n] = fmt.Sprintf("%s ino=%d", mounttest.TypeName(st.Mode), st.Ino)
	}
	return v
}

// stale lists the names whose view through the mount differs.
func stale(got, want map[string]string, names []string) []string {
	var out []string
	for _, n := range names {
		if got[n] != want[n] {
			out = append(out, fmt.Sprintf("%s: mount %s, backing %s", n, got[n], want[n]))
		}
	}
	return out
}

// stormRounds is how many storms each case runs (CLAMFUSE_STORM_ROUNDS,
// for measuring a failure rate).
// storm steps sc in src until stop is closed, counting the steps; the
// first error ends it, stored in stepErr.
func (sc stormCase) storm(src string, stop <-chan struct{}, steps *atomic.Int64, stepErr *atomic.Value) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if err := sc.step(src, i); err != nil {
			stepErr.Store(err)
			return
		}
		steps.Add(1)
	}
}

func stormRounds() int {
	if n, err := strconv.Atoi(os.Getenv("CLAMFUSE_STORM_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// TestWatchStorm: after each storm of backing-side exchanges or
// renames with lookups, stats, opens and listings through the mount
// meanwhile, every name shows through the mount what the backing
// directory has within watchBound; with readdirplus on and off, and
// with passthrough on and off.
func TestWatchStorm(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	for _, rdp := range []string{"on", "off"} {
		for _, pm := range ptModes {
			for _, sc := range stormCases() {
				t.Run(fmt.Sprintf("readdirplus-%s/%s/%s", rdp, pm.name, sc.name), func(t *testing.T) {
					testWatchStorm(t, clamd, rdp, pm, sc)
				})
			}
		}
	}
}

func testWatchStorm(t *testing.T, clamd *clamdtest.Clamd, rdp string, pm ptMode, sc stormCase) {
	cfg := watchedConfig(clamd) + fmt.Sprintf("readdirplus = %q\n%s\n", rdp, pm.toml)
	m := mounttest.Start(t, mounttest.Options{Config: cfg})
	m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	pm.check(t, m)
	sc.setup(t, m.Source)
	names := []string{"a", "b", "new"}

	rounds, failed := stormRounds(), 0
	for round := 1; round <= rounds; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var steps, looks atomic.Int64
		var stepErr atomic.Value
		wg.Go(func() { sc.storm(m.Source, stop, &steps, &stepErr) })
		for g := range 6 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					p := m.Path(names[(g+i)%2])
					var st unix.Stat_t
					switch i % 4 {
					case 0, 1:
						unix.Lstat(p, &st)
					case 2:
						if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
							unix.Close(fd)
						}
					case 3:
						if g == 0 {
							os.ReadDir(m.Target)
						} else {
							unix.Lstat(p, &st)
						}
					}
					looks.Add(1)
				}
			})
		}
		m.Within(t, 60*time.Second, "the storm", func() {
			// Only the last changes of a storm can leave a name
			// stale (a later change of the name invalidates it
			// again): many short storms, not one long one.
			deadline := time.Now().Add(30 * time.Millisecond)
			for time.Now().Before(deadline) && stepErr.Load() == nil {
				time.Sleep(time.Millisecond) // the storm's length, not a synchronisation
			}
			close(stop)
			wg.Wait()
		})
		if err, _ := stepErr.Load().(error); err != nil {
			t.Fatalf("a change in the backing directory failed: %v", err)
		}
		// The storm stopped: the mount must catch up within watchBound.
		var got, want map[string]string
		var bad []string
		m.Within(t, watchBound+30*time.Second, "viewing after the storm", func() {
			deadline := time.Now().Add(watchBound)
			for {
				want = stormView(m.Source, names)
				got = stormView(m.Target, names)
				if bad = stale(got, want, names); len(bad) == 0 || time.Now().After(deadline) {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		if len(bad) > 0 {
			failed++
			t.Errorf("round %d: %d changes, %d lookups; %v after the storm the mount still shows stale names:\n%s",
				round, steps.Load(), looks.Load(), watchBound, strings.Join(bad, "\n"))
		}
	}
	t.Logf("%d of %d storms left stale names", failed, rounds)
}

// TestWatchStormFIFO is testHostileSwapToFIFO's first form: readers
// (processes) open a name through the mount for reading, without
// O_NONBLOCK, while the backing directory exchanges a regular file and
// a FIFO under the names "a" and "b"; a reader that finds the FIFO is
// parked by the kernel until a writer opens it, and writers are opened
// through the mount by both names, every millisecond, during the storm
// and after it. Once the storm stops, every reader must be released
// within watchBound: a name through the mount must lead to the FIFO's
// node the readers are parked on.
//
// It has not reproduced the hang TestHostileSwapToFIFO with
// CLAMFUSE_FIFO_PARK=1 did (0 in 60 storms before the fix): its readers
// are processes, and the FORGET that the hang needs racing a LOOKUP of
// the FIFO seems not to come; it stays as a check of the property.
func TestWatchStormFIFO(t *testing.T) {
	mounttest.Require(t)
	bin := fsopBinary(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	inPtModes(t, func(t *testing.T, pm ptMode) {
		m := mounttest.Start(t, mounttest.Options{Config: watchedConfig(clamd) + pm.toml + "\n"})
		m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
		pm.check(t, m)
		sc := stormCases()[1] // exchange-fifo
		sc.setup(t, m.Source)
		names := []string{"a", "b"}
		release := func() {
			for _, n := range names {
				if fd, err := unix.Open(m.Path(n), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
					unix.Close(fd)
				}
			}
		}
		rounds, failed, atEnd := stormRounds(), 0, 0
		for round := 1; round <= rounds; round++ {
			stop, stopReaders := make(chan struct{}), make(chan struct{})
			var swapper, releaser, readers sync.WaitGroup
			var stepErr atomic.Value
			var mu sync.Mutex
			running := map[*exec.Cmd]struct{}{}
			var steps atomic.Int64
			swapper.Go(func() { sc.storm(m.Source, stop, &steps, &stepErr) })
			releaser.Go(func() { every(stopReaders, time.Millisecond, release) })
			for range 8 {
				readers.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						cmd := exec.Command(bin, "open-once", m.Path("a"))
						mu.Lock()
						err := cmd.Start()
						if err == nil {
							running[cmd] = struct{}{}
						}
						mu.Unlock()
						if err != nil {
							return
						}
						cmd.Wait()
						mu.Lock()
						delete(running, cmd)
						mu.Unlock()
					}
				})
			}
			time.Sleep(300 * time.Millisecond) // the storm's length, not a synchronisation
			close(stop)
			swapper.Wait()
			mu.Lock()
			atEnd += len(running)
			mu.Unlock()
			if err, _ := stepErr.Load().(error); err != nil {
				t.Fatalf("a change in the backing directory failed: %v", err)
			}
			// The storm stopped: writers by both names must release
			// every parked reader within watchBound.
			parked := -1
			deadline := time.Now().Add(watchBound)
			for time.Now().Before(deadline) {
				mu.Lock()
				parked = len(running)
				mu.Unlock()
				if parked == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if parked > 0 {
				failed++
				got, want := stormView(m.Target, names), stormView(m.Source, names)
				t.Errorf("round %d: %v after the storm, %d readers still parked; the mount shows %v, the backing directory %v",
					round, watchBound, parked, got, want)
				mu.Lock()
				for cmd := range running {
					cmd.Process.Kill()
				}
				mu.Unlock()
			}
			readers.Wait()
			close(stopReaders)
			releaser.Wait()
		}
		t.Logf("%d of %d storms left readers parked (%d readers running when the storms stopped)", failed, rounds, atEnd)
	})
}
