package testenv

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	writeTrackedLocked()
	trackMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			trackMu.Lock()
			if tracked[dir]--; tracked[dir] <= 0 {
				delete(tracked, dir)
			}
			writeTrackedLocked()
			trackMu.Unlock()
		})
	}
}

// trackedFile, when not "", is where the tracked mountpoints are kept,
// one per line, for the guard process (Watchdog).
var trackedFile string

// writeTrackedLocked writes the tracked mountpoints to trackedFile.
func writeTrackedLocked() {
	if trackedFile == "" {
		return
	}
	var b strings.Builder
	for d := range tracked {
		b.WriteString(d + "\n")
	}
	tmp := trackedFile + ".new"
	if os.WriteFile(tmp, []byte(b.String()), 0o600) == nil {
		_ = os.Rename(tmp, trackedFile)
	}
}

// guardScript, run by sh with the tracked-mounts file and a number of
// seconds, sleeps that long and then aborts the FUSE connection of each
// mountpoint in the file (its device's minor in /proc/self/mountinfo)
// and detaches it.
const guardScript = `sleep "$2"
echo "testenv: guard: aborting and detaching the mounts of a test binary that did not end by its deadline" >&2
while read -r dir; do
	dev=$(awk -v d="$dir" '$5 == d { print $3 }' /proc/self/mountinfo | tail -n 1)
	abort="/sys/fs/fuse/connections/${dev#*:}/abort"
	[ -n "$dev" ] && [ -e "$abort" ] && echo 1 > "$abort"
	umount -l "$dir" 2>/dev/null
done < "$1"
rm -f "$1"
`

// startGuard starts the guard process: Watchdog's timer runs in this
// process, and a process whose own FUSE server cannot answer may be
// stuck whole (a thread blocked in epoll_ctl on one of its FUSE files,
// which the Go runtime does not count as a system call, keeps its
// processor, and a collection that stops the world then never starts it
// again), so that no timer of its fires; nor does the process end when
// go test's timeout kills it, since that thread waits on a server that
// is gone. The guard, another process, aborts the tracked mounts after
// d. The returned function stops it.
func startGuard(d time.Duration) (stop func()) {
	f, err := os.CreateTemp("", "testenv-mounts-*")
	if err != nil {
		return func() {}
	}
	f.Close()
	trackMu.Lock()
	trackedFile = f.Name()
	writeTrackedLocked()
	trackMu.Unlock()
	cmd := exec.Command("/bin/sh", "-c", guardScript, "guard", f.Name(), strconv.Itoa(int(d.Seconds())+1))
	cmd.Stderr = os.Stderr
	// Its own process group: not killed with the test binary's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(f.Name())
		return func() {}
	}
	go cmd.Wait()
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		trackMu.Lock()
		trackedFile = ""
		trackMu.Unlock()
		os.Remove(f.Name())
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
	// Should this process be stuck whole, another does it a little later.
	stopGuard := startGuard(d + 5*time.Second)
	return func() {
		timer.Stop()
		stopGuard()
	}
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
