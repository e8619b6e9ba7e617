package test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestInterruptedOpen: an open waiting for its scan is interrupted by the
// kernel at every signal its process gets. A caught signal (SA_RESTART)
// must not fail the open with EINTR, which open(2) of a regular file
// never returns on a local filesystem and most programs do not retry
// (fsx met it under the Go runtime's preemption signals): the open waits
// on and gets its verdict. An opener that dies (SIGKILL, or a signal it
// does not catch) gives up the wait at once, while the scan still runs,
// instead of staying unkillable until clamd.timeout; the scan it ran
// goes on without it, sent to clamd again.
func TestInterruptedOpen(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", proxy.Address(), "--timeout", "120s", "--log-level", "debug"}})
	for i, name := range []string{"caught.bin", "killed.bin", "terminated.bin"} {
		putFile(t, m.Backing(name), pseudoRandom(32<<10, uint64(7100+i)))
	}
	fsop := fsopBinary(t)
	proxy.Hold()

	t.Run("caught", func(t *testing.T) {
		var out bytes.Buffer
		cmd := exec.Command(fsop, "open-once", m.Path("caught.bin"))
		cmd.Stdout, cmd.Stderr = &out, &out
		mustDo(t, cmd.Start())
		done := waitChan(cmd)
		scan := proxy.Next(t, scanBound)
		// SIGURG: the Go runtime's own preemption signal, caught with
		// SA_RESTART. Signal until clamfuse saw an interrupt of the open.
		interrupted := func() bool {
			for _, l := range m.Log.Lines("open interrupted while it waits") {
				if strings.Contains(l, "pid=") {
					return true
				}
			}
			return false
		}
		eventually(t, logBound, "an interrupt of the waiting open", func() bool {
			select {
			case err := <-done:
				t.Fatalf("open returned while its scan was held, at a caught signal: %v: %q", err, out.String())
			default:
			}
			signalThreads(cmd.Process.Pid, unix.SIGURG)
			return interrupted()
		})
		for range 20 {
			signalThreads(cmd.Process.Pid, unix.SIGURG)
		}
		select {
		case err := <-done:
			t.Fatalf("open returned while its scan was held, after caught signals: %v: %q", err, out.String())
		default:
		}
		scan.Release()
		select {
		case err := <-done:
			if err != nil || strings.TrimSpace(out.String()) != "ok" {
				t.Fatalf("interrupted open after its scan: %v: %q; want ok", err, out.String())
			}
		case <-time.After(scanBound):
			t.Fatalf("open still waiting %v after its scan was released", scanBound)
		}
	})

	for _, tc := range []struct {
		name, file string
		sig        syscall.Signal
		argv       []string
	}{
		// fsop (Go) catches every signal but SIGKILL.
		{"SIGKILL", "killed.bin", syscall.SIGKILL, []string{fsop, "open-once"}},
		// cat does not catch SIGTERM: the kernel makes it fatal.
		{"uncaught SIGTERM", "terminated.bin", syscall.SIGTERM, []string{"cat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.argv[0], append(tc.argv[1:], m.Path(tc.file))...)
			mustDo(t, cmd.Start())
			done := waitChan(cmd)
			scan := proxy.Next(t, scanBound)
			defer scan.Release()
			mustDo(t, cmd.Process.Signal(tc.sig))
			select {
			case err := <-done:
				var ee *exec.ExitError
				if ws, ok := exitStatus(err, &ee); !ok || !ws.Signaled() || ws.Signal() != tc.sig {
					t.Fatalf("opener after %v: %v; want killed by it", tc.sig, err)
				}
			case <-time.After(logBound):
				t.Fatalf("opener sent %v still alive %v later while its scan is held", tc.sig, logBound)
			}
			m.WaitLogLines(t, logBound, "opener dying", "pid="+strconv.Itoa(cmd.Process.Pid))
			// The dead opener ran the scan itself: it stopped waiting for
			// clamd's answer and passed the scan on, sent again (on
			// another connection: the one cut short is closed).
			proxy.Next(t, scanBound)
		})
	}
	proxy.Release()
	// The scans held for the dead openers went on: their files read.
	for _, name := range []string{"killed.bin", "terminated.bin"} {
		if _, err := os.ReadFile(m.Path(name)); err != nil {
			t.Errorf("read %s after its opener died: %v", name, err)
		}
	}
}

func waitChan(cmd *exec.Cmd) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	return ch
}

func exitStatus(err error, ee **exec.ExitError) (syscall.WaitStatus, bool) {
	if err == nil || !errors.As(err, ee) {
		return 0, false
	}
	ws, ok := (*ee).Sys().(syscall.WaitStatus)
	return ws, ok
}

// signalThreads sends sig to every thread of process pid (tgkill): the
// one blocked in the open gets it, whichever it is. A process gone gets
// nothing.
func signalThreads(pid int, sig unix.Signal) {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range tasks {
		tid, err := strconv.Atoi(e.Name())
		if err == nil {
			unix.Tgkill(pid, tid, sig)
		}
	}
}

// TestDyingLeaderWithFollower: the open that starts a scan runs it itself
// (cache.Gate.lead). When its opener dies while it waits for clamd's
// answer, it gives up at once, and an open of the same file that joined
// its scan still gets the verdict: the scan goes on without the dead
// opener, sent to clamd again on another connection, and its verdict is
// cached.
func TestDyingLeaderWithFollower(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", proxy.Address(), "--timeout", "120s", "--log-level", "debug"}})
	putFile(t, m.Backing("shared.bin"), pseudoRandom(32<<10, 7200))
	fsop := fsopBinary(t)
	proxy.Hold()
	defer proxy.Release()

	leader := exec.Command("cat", m.Path("shared.bin"))
	mustDo(t, leader.Start())
	leaderDone := waitChan(leader)
	first := proxy.Next(t, scanBound)
	defer first.Release()

	var out bytes.Buffer
	follower := exec.Command(fsop, "open-once", m.Path("shared.bin"))
	follower.Stdout, follower.Stderr = &out, &out
	mustDo(t, follower.Start())
	followerDone := waitChan(follower)
	eventually(t, logBound, "the second open waiting beside the first", func() bool { return m.Waiting() >= 2 })

	mustDo(t, leader.Process.Signal(syscall.SIGKILL))
	select {
	case err := <-leaderDone:
		var ee *exec.ExitError
		if ws, ok := exitStatus(err, &ee); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("leader after SIGKILL: %v; want killed by it", err)
		}
	case <-time.After(logBound):
		t.Fatalf("leader sent SIGKILL still alive %v later while its scan is held", logBound)
	}
	again := proxy.Next(t, scanBound)
	select {
	case err := <-followerDone:
		t.Fatalf("the joined open returned while the scan was held: %v: %q", err, out.String())
	default:
	}
	again.Release()
	select {
	case err := <-followerDone:
		if err != nil || strings.TrimSpace(out.String()) != "ok" {
			t.Fatalf("joined open: %v: %q; want ok", err, out.String())
		}
	case <-time.After(scanBound):
		t.Fatalf("joined open still waiting %v after the scan was released", scanBound)
	}
	proxy.Release()
	scans := proxy.Scans()
	if scans != 2 {
		t.Errorf("%d scans sent; want 2 (the dead opener's, cut short, and the one sent again)", scans)
	}
	if _, err := os.ReadFile(m.Path("shared.bin")); err != nil {
		t.Fatalf("read after the scan: %v", err)
	}
	if got := proxy.Scans(); got != scans {
		t.Errorf("a later open scanned again (%d scans); want the verdict cached", got)
	}
}

// TestDyingLeaderClamdHung: clamd takes a scan and never answers. The
// open that started the scan dies (SIGKILL) while it waits; the opens
// that joined its scan, and one made after its death, must still fail
// closed within clamd.timeout (and the second of slack the gate allows),
// never succeed, and never wait for good. Once the scan passed on is
// over, clamfuse holds no more descriptors than before: the dead
// opener's scan does not keep one past its deadline.
func TestDyingLeaderClamdHung(t *testing.T) {
	mounttest.Require(t)
	const timeout = 4 * time.Second
	bound := timeout + time.Second + 4*time.Second // the gate's slack, and the machine's
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", proxy.Address(), "--timeout", timeout.String(), "--log-level", "debug"}})
	putFile(t, m.Backing("hung.bin"), pseudoRandom(32<<10, 7300))
	fsop := fsopBinary(t)
	pid := m.Cmd.Process.Pid
	fds := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	proxy.Hold()
	defer proxy.Release()

	leader := exec.Command("cat", m.Path("hung.bin"))
	mustDo(t, leader.Start())
	leaderDone := waitChan(leader)
	proxy.Next(t, scanBound) // held for good

	type result struct {
		out  string
		err  error
		took time.Duration
	}
	open := func() <-chan result {
		ch := make(chan result, 1)
		var out bytes.Buffer
		cmd := exec.Command(fsop, "open-once", m.Path("hung.bin"))
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		mustDo(t, cmd.Start())
		go func() {
			err := cmd.Wait()
			ch <- result{strings.TrimSpace(out.String()), err, time.Since(start)}
		}()
		return ch
	}
	var joined []<-chan result
	for range 3 {
		joined = append(joined, open())
	}
	eventually(t, logBound, "the opens waiting beside the first", func() bool { return m.Waiting() >= 4 })

	mustDo(t, leader.Process.Signal(syscall.SIGKILL))
	select {
	case <-leaderDone:
	case <-time.After(logBound):
		t.Fatalf("leader sent SIGKILL still alive %v later while clamd hangs", logBound)
	}
	later := open()
	for i, ch := range append(joined, later) {
		select {
		case r := <-ch:
			if r.err != nil || r.out == "ok" || r.out == "" {
				t.Errorf("open %d while clamd hangs: %v %q after %v; want it refused (fsop: an errno)", i, r.err, r.out, r.took)
			} else {
				t.Logf("open %d while clamd hangs: %q after %v", i, r.out, r.took.Round(time.Millisecond))
			}
			if r.took > bound {
				t.Errorf("open %d refused after %v; want within %v", i, r.took, bound)
			}
		case <-time.After(2 * bound):
			t.Fatalf("open %d still waiting %v after it started while clamd hangs", i, 2*bound)
		}
	}
	// Every scan given up, its descriptors closed (those of its
	// connections to the proxy included).
	eventually(t, logBound, "clamfuse's descriptors back to their count before", func() bool { return fds() <= before })
}

// TestDyingOpenersBounded: a user starts opens of files not judged yet
// while clamd takes their scans and never answers, and kills the openers
// (each leading its own scan, cache.Gate.lead), round after round. The
// scans of dead openers that go on without them hold a descriptor each,
// which the user's quota (mount.max_open_per_user) no longer counts: they
// must be bounded (four for each scan clamd may run at once), or a user
// killing openers in a loop uses up clamfuse's descriptors within
// clamd.timeout, and every open of every user fails.
func TestDyingOpenersBounded(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	const maxConcurrent = 2
	m := mounttest.Start(t, mounttest.Options{
		Config: fmt.Sprintf("[mount]\nmax_open_per_user = 40\n[clamd]\nmax_concurrent = %d\n", maxConcurrent),
		Args:   []string{"--clamd", proxy.Address(), "--timeout", "120s"}})
	const rounds, per = 6, 15
	for i := range rounds * per {
		putFile(t, m.Backing(fmt.Sprintf("f%03d", i)), pseudoRandom(4096, uint64(9000+i)))
	}
	pid := m.Cmd.Process.Pid
	fds := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	proxy.Hold()
	defer proxy.Release()
	// Each scan passed on holds its file and, once sent, its connection
	// to clamd; and some slack for clamfuse's own.
	bound := before + 2*4*maxConcurrent + 8
	for r := range rounds {
		var cmds []*exec.Cmd
		for i := range per {
			cmd := exec.Command("cat", m.Path(fmt.Sprintf("f%03d", r*per+i)))
			mustDo(t, cmd.Start())
			cmds = append(cmds, cmd)
		}
		eventually(t, logBound, "the opens waiting", func() bool { return m.Waiting() >= per })
		for _, cmd := range cmds {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
		eventually(t, logBound, "the killed opens gone", func() bool { return m.Waiting() == 0 })
		if got := fds(); got > bound {
			t.Fatalf("after %d openers killed while clamd hangs, clamfuse holds %d descriptors (%d before); want at most %d", (r+1)*per, got, before, bound)
		}
	}
}
