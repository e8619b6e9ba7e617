package testenv

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Mounts served by the test process itself (the fs and fusefs packages
// mount in-process) die with it: when go test's timeout kills the binary,
// the kernel aborts their connections but leaves the mountpoints behind,
// answering ENOTCONN. TrackMount records such a mountpoint until it is
// unmounted; ReleaseMounts, which the watchdog calls shortly before the
// deadline, aborts and lazily unmounts every one still tracked.

var (
	trackMu sync.Mutex
	tracked = map[string]int{} // mountpoint -> how many times tracked
)

// TrackMount records dir, a FUSE mount served by this process; call the
// result once it is unmounted.
func TrackMount(dir string) (untrack func()) {
	trackMu.Lock()
	tracked[dir]++
	trackMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			trackMu.Lock()
			if tracked[dir]--; tracked[dir] <= 0 {
				delete(tracked, dir)
			}
			trackMu.Unlock()
		})
	}
}

// ReleaseMounts aborts the FUSE connection of every tracked mountpoint
// (through fusectl, found by the mount's device in /proc/self/mountinfo)
// and detaches it.
func ReleaseMounts() {
	trackMu.Lock()
	dirs := make([]string, 0, len(tracked))
	for d := range tracked {
		dirs = append(dirs, d)
	}
	trackMu.Unlock()
	if len(dirs) == 0 {
		return
	}
	conns := fuseConns()
	for _, d := range dirs {
		if c, ok := conns[d]; ok {
			_ = os.WriteFile(filepath.Join("/sys/fs/fuse/connections", c, "abort"), []byte("1"), 0)
		}
		_ = syscall.Unmount(d, syscall.MNT_DETACH)
	}
}

// fuseConns maps each FUSE mountpoint of this mount namespace to its
// fusectl connection (the minor number of its device).
func fuseConns() map[string]string {
	out := map[string]string{}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if _, minor, ok := strings.Cut(fields[2], ":"); ok {
			out[fields[4]] = minor
		}
	}
	return out
}

// Watchdog calls ReleaseMounts 20 s before the test binary's deadline
// (-test.timeout, else 10 minutes from now), so that a hung test does not
// leave dead mountpoints behind. Use it from TestMain after flag.Parse:
// defer testenv.Watchdog()(). The returned function stops it.
func Watchdog() (stop func()) {
	deadline := time.Now().Add(10 * time.Minute)
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			deadline = time.Now().Add(d)
		}
	}
	d := max(time.Until(deadline)-20*time.Second, time.Second)
	timer := time.AfterFunc(d, func() {
		fmt.Fprintln(os.Stderr, "testenv: watchdog: aborting and detaching this test binary's mounts before the test deadline")
		ReleaseMounts()
	})
	return func() { timer.Stop() }
}

// Run runs m's tests with the watchdog, releases whatever mounts are left,
// and returns the exit code: os.Exit(testenv.Run(m)) from TestMain.
func Run(m *testing.M) int {
	flag.Parse()
	stop := Watchdog()
	code := m.Run()
	stop()
	ReleaseMounts()
	return code
}
