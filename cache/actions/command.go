package actions

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// start runs the command in the background with env added to clamfuse's
// environment; see Infected. At most maxRunning run at once, and when
// maxQueued are already waiting or running the command is not run (and
// that is logged): a flood of detections must not pile up processes.
func (r *Runner) start(o *Options, env []string, rel string) {
	if r.queued.Add(1) > maxQueued {
		r.queued.Add(-1)
		r.commandsFailed.Add(1)
		o.Logger.Error("on_infected command not run: too many pending", "path", rel, "pending", maxQueued)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.queued.Add(-1)
		r.running <- struct{}{}
		defer func() { <-r.running }()
		r.run(o, env, rel)
	}()
}

func (r *Runner) run(o *Options, env []string, rel string) {
	ctx, cancel := context.WithTimeout(r.base, o.CommandTimeout)
	defer cancel()
	argv := append(slices.Clone(o.Launcher), o.Command...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = "/"
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, killed whole at the timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second // children that keep the output open
	r.commands.Add(1)
	began := time.Now()
	err := cmd.Run()
	took := time.Since(began).Round(time.Millisecond)
	attrs := []any{"path", rel, "command", o.Command[0], "duration", took}
	if s := strings.TrimSpace(out.String()); s != "" {
		attrs = append(attrs, "output", s)
	}
	switch {
	case errors.Is(r.base.Err(), context.Canceled):
		r.commandsFailed.Add(1)
		o.Logger.Warn("on_infected command killed: clamfuse is stopping", attrs...)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		r.commandsFailed.Add(1)
		o.Logger.Warn("on_infected command killed after its timeout", append(attrs, "timeout", o.CommandTimeout)...)
	case err != nil:
		r.commandsFailed.Add(1)
		o.Logger.Warn("on_infected command failed", append(attrs, "err", err)...)
	default:
		o.Logger.Info("on_infected command done", attrs...)
	}
}

// tailBuffer keeps the last outputLimit bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > outputLimit {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-outputLimit:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
