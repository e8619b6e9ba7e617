package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/config"
)

// Detaching, for the fstab form: mount(8) waits for its helper, so the
// helper must exit once the mount is live while the filesystem goes on
// being served. The parent re-executes clamfuse as a child in a session
// of its own, with detachEnv set and the write end of a status pipe as
// fd 3, and reads the pipe to its end: the child writes its errors there
// until the mount is live, then readyMsg, and closes it. The parent exits
// 0 on readyMsg, or else with the child's exit code after copying what
// the child wrote to its own stderr. The child logs to syslog.

const (
	detachEnv       = "CLAMFUSE_DETACHED" // set in the child, whose fd 3 is the status pipe
	statusFD        = 3
	readyMsg        = "\x00clamfuse ready\n" // no error message contains a NUL
	notifySocketEnv = "NOTIFY_SOCKET"
)

// mountHooks adapt serveMount to how clamfuse was started. The zero value
// is the foreground "clamfuse mount".
type mountHooks struct {
	// newLog builds the logger; nil means newLogger on stderr.
	newLog func(stderr io.Writer, c config.Log) *slog.Logger
	// ready, if set, is called once the mount is live.
	ready func()
}

func (h mountHooks) logger(stderr io.Writer, c config.Log) *slog.Logger {
	if h.newLog != nil {
		return h.newLog(stderr, c)
	}
	return newLogger(stderr, c)
}

// isDetachedChild reports whether this process is the detached child.
func isDetachedChild() bool { return os.Getenv(detachEnv) != "" }

// detach runs the fstab form args in a background child and returns once
// its mount is live (exitOK) or it has failed (its exit code).
func detach(args []string, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		return exitCode(fmt.Errorf("detaching: %v", err), stderr)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return exitCode(fmt.Errorf("detaching: %v", err), stderr)
	}
	cmd := &exec.Cmd{
		Path: exe,
		Args: append([]string{os.Args[0]}, args...),
		Env:  childEnv(os.Environ()),
		// Stdin, Stdout and Stderr are /dev/null: the child outlives
		// whoever ran mount(8), and logs to syslog.
		ExtraFiles:  []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return exitCode(fmt.Errorf("detaching: %v", err), stderr)
	}
	status, _ := io.ReadAll(r) // until the child closes its end, or exits
	r.Close()
	if msg, ok := bytes.CutSuffix(status, []byte(readyMsg)); ok {
		stderr.Write(msg)
		_ = cmd.Process.Release()
		return exitOK
	}
	stderr.Write(status)
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		fmt.Fprintln(stderr, "clamfuse: the mount process exited before the mount was live")
		return exitFailure
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode()
	default:
		fmt.Fprintf(stderr, "clamfuse: the mount process failed: %v\n", err)
		return exitFailure
	}
}

// childEnv is env with detachEnv set, and without NOTIFY_SOCKET: the
// child is not the main process of whatever service ran mount(8).
func childEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if strings.HasPrefix(kv, detachEnv+"=") || strings.HasPrefix(kv, notifySocketEnv+"=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, detachEnv+"=1")
}

// serveDetached is the child: it serves the mount and reports on fd 3.
func serveDetached(mountArgs []string) int {
	os.Unsetenv(detachEnv)
	var st unix.Stat_t
	if err := unix.Fstat(statusFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		fmt.Fprintf(os.Stderr, "clamfuse: %s is set but fd %d is not a pipe\n", detachEnv, statusFD)
		return exitUsage
	}
	syscall.CloseOnExec(statusFD) // not for fusermount3
	sp := &statusPipe{f: os.NewFile(statusFD, "status pipe"), after: io.Discard}
	h := mountHooks{
		newLog: func(_ io.Writer, c config.Log) *slog.Logger {
			log, err := newSyslogLogger(c)
			if err != nil {
				fmt.Fprintf(sp, "clamfuse: warning: %v; the background mount process logs nothing\n", err)
				return slog.New(slog.DiscardHandler)
			}
			sp.setAfter(logWriter{log})
			return log
		},
		ready: func() {
			_ = os.Chdir("/") // do not keep the caller's directory busy
			sp.ready()
		},
	}
	return exitCode(serveMount(mountArgs, sp, h), sp)
}

// statusPipe is the child's stderr: the pipe to the parent until the
// mount is live, then after (the log).
type statusPipe struct {
	mu    sync.Mutex // guards f and after
	f     *os.File   // nil once ready
	after io.Writer
}

func (p *statusPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f != nil {
		return p.f.Write(b)
	}
	return p.after.Write(b)
}

func (p *statusPipe) setAfter(w io.Writer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.after = w
}

// ready sends readyMsg and closes the pipe, which lets the parent exit.
func (p *statusPipe) ready() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return
	}
	_, _ = io.WriteString(p.f, readyMsg)
	p.f.Close()
	p.f = nil
}

// logWriter logs each write as an error: what the child would have
// printed on a stderr it no longer has.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(b []byte) (int, error) {
	w.log.Error(strings.TrimSpace(strings.TrimPrefix(string(b), "clamfuse: ")))
	return len(b), nil
}
