package fs

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// An open that waits for a scan is interrupted by the kernel (FUSE
// INTERRUPT, which cancels the request's context) whenever a signal comes
// to the opener, caught or not: a timer, a child's exit, the Go runtime's
// own preemption signal (SIGURG) many times a second. Answering EINTR
// then would fail an open(2) that the program expects the kernel to
// restart (SA_RESTART; FUSE cannot reply ERESTARTSYS), and fsx, like most
// programs, does not retry an open of a regular file. A local filesystem
// does not fail an open for a caught signal either. So the wait goes on
// through such interrupts, and ends early only when the opener is dying:
// a fatal signal is pending (the kernel then waits for clamfuse's answer
// uninterruptibly, and the process cannot exit before it), or it is gone.
// Every wait still ends within clamd.timeout.

// interruptPoll is how often an interrupted wait looks at the opener
// again: the kernel sends INTERRUPT once per request, so a fatal signal
// that comes after a caught one is seen only by looking.
const interruptPoll = 20 * time.Millisecond

// untilDying returns the context an open of thread tid waits for its
// verdict under: done once ctx is (the request was interrupted) and the
// opener is dying. Call stop when the wait ends.
func (f *FS) untilDying(ctx context.Context, tid uint32) (_ context.Context, stop func()) {
	wait, cancel := context.WithCancel(context.WithoutCancel(ctx))
	after := context.AfterFunc(ctx, func() {
		f.log.Debug("open interrupted while it waits for a verdict; it waits on unless the opener dies", "pid", tid)
		t := time.NewTicker(interruptPoll)
		defer t.Stop()
		for {
			if dying(tid) {
				f.log.Debug("opener dying: its open gives up the wait", "pid", tid)
				cancel()
				return
			}
			select {
			case <-wait.Done():
				return
			case <-t.C:
			}
		}
	})
	return wait, func() {
		after()
		cancel()
	}
}

// dying reports whether thread tid has a signal pending that will end
// its process: SIGKILL (which the kernel also queues to every thread for
// any fatal signal not dumping core), or a signal neither caught, ignored
// nor blocked whose default action is to terminate; or whether it is
// gone.
func dying(tid uint32) bool {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return true // gone (or not in our pid namespace: nothing to wait for)
	}
	return fatalPending(procSignals(b))
}

// fatalPending reports whether the signal masks st of a thread (see
// procSignals) show a signal pending that ends its process.
func fatalPending(st map[string]uint64) bool {
	pending := st["SigPnd"] | st["ShdPnd"]
	if pending&sigbit(unix.SIGKILL) != 0 {
		return true
	}
	fatal := pending &^ (st["SigBlk"] | st["SigIgn"] | st["SigCgt"]) &^ harmless
	return fatal != 0
}

// harmless are the signals whose default action does not end a process.
var harmless = sigbit(unix.SIGCHLD) | sigbit(unix.SIGURG) | sigbit(unix.SIGWINCH) |
	sigbit(unix.SIGCONT) | sigbit(unix.SIGSTOP) | sigbit(unix.SIGTSTP) |
	sigbit(unix.SIGTTIN) | sigbit(unix.SIGTTOU)

func sigbit(s unix.Signal) uint64 { return 1 << (uint(s) - 1) }

// procSignals parses the signal masks of a /proc/PID/status.
func procSignals(b []byte) map[string]uint64 {
	m := make(map[string]uint64, 5)
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) != 6 || !bytes.HasPrefix(k, []byte("Sig")) && !bytes.HasPrefix(k, []byte("Shd")) {
			continue
		}
		if n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64); err == nil {
			m[string(k)] = n
		}
	}
	return m
}
