// Package actions does what clamfuse is configured to do, besides denying
// the open, when a file is found infected: write one audit line, move the
// file to a quarantine directory, and run a command.
//
// The filesystem calls Runner.Infected for every open the gate denies as
// infected, with the backing directory descriptor and name of the file;
// the Runner acts at most once per file state (the cache key without the
// database), so a file opened again and again is acted on once. The
// quarantine is done before Infected returns (a rename, or a copy when
// the quarantine is on another filesystem); the command runs in the
// background, bounded in time and in number.
//
// Nothing here ever deletes data that is not safely elsewhere: when any
// step of a quarantine fails, the file stays where it was.
//
// This package does not import bazil.org/fuse.
package actions

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clamfuse/clamfuse/cache"
)

// Options configure a Runner.
type Options struct {
	// QuarantineDir, if set, is an existing directory infected files are
	// moved to, each with a NAME.json record.
	QuarantineDir string
	// Command, if set, is run (no shell) for each detection, with the
	// environment of clamfuse plus CLAMFUSE_* variables (see Infected).
	Command []string
	// CommandTimeout bounds a command; it is then killed with its
	// process group. Default 30s.
	CommandTimeout time.Duration
	// Launcher, if set, is put before Command when it runs: an argv
	// that sets up the process and then executes the rest (clamfuse
	// serves with umask 0, and its launcher gives the command the umask
	// clamfuse started with).
	Launcher []string
	// Source and MountPoint are the backing directory and the mountpoint,
	// for CLAMFUSE_SOURCE, CLAMFUSE_PATH and the quarantine record.
	Source, MountPoint string
	Logger             *slog.Logger
}

// Limits on commands.
const (
	maxRunning  = 4  // commands running at once
	maxQueued   = 64 // commands waiting or running; more are dropped
	maxSeen     = 1 << 16
	outputLimit = 4 << 10 // bytes of a command's output kept for the log
)

// Runner carries out the actions. It is safe for concurrent use.
type Runner struct {
	opts atomic.Pointer[Options]

	mu   sync.Mutex // guards seen, and makes its check-and-set atomic
	seen *cache.LRU // file states acted on

	running chan struct{} // one token per command running
	queued  atomic.Int64  // commands waiting or running
	wg      sync.WaitGroup
	base    context.Context // commands' parent; Close cancels it
	kill    context.CancelFunc

	// Counters, for metrics.
	detections, quarantined, quarantineFailed, commands, commandsFailed atomic.Uint64
}

// New returns a Runner with opts.
func New(opts Options) *Runner {
	r := &Runner{seen: cache.NewLRU(maxSeen, 0), running: make(chan struct{}, maxRunning)}
	r.base, r.kill = context.WithCancel(context.Background())
	r.opts.Store(normalize(opts))
	return r
}

func normalize(o Options) *Options {
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Command = slices.Clone(o.Command)
	return &o
}

// SetOptions replaces the options (on a configuration reload). When the
// actions themselves change, files already acted on are forgotten, so the
// new actions apply to them on their next denied open.
func (r *Runner) SetOptions(opts Options) {
	n := normalize(opts)
	old := r.opts.Swap(n)
	if old.QuarantineDir != n.QuarantineDir || !reflect.DeepEqual(old.Command, n.Command) {
		r.mu.Lock()
		r.seen = cache.NewLRU(maxSeen, 0)
		r.mu.Unlock()
	}
}

// Stats are the Runner's counters.
type Stats struct {
	Detections       uint64 // files acted on (audit lines written)
	Quarantined      uint64
	QuarantineFailed uint64
	Commands         uint64 // commands started
	CommandsFailed   uint64 // that failed to start, exited non-zero or timed out
}

// Stats returns a snapshot of the counters.
func (r *Runner) Stats() Stats {
	return Stats{
		Detections: r.detections.Load(), Quarantined: r.quarantined.Load(), QuarantineFailed: r.quarantineFailed.Load(),
		Commands: r.commands.Load(), CommandsFailed: r.commandsFailed.Load(),
	}
}

// Wait waits for the commands started so far.
func (r *Runner) Wait() { r.wg.Wait() }

// Close waits up to grace for the commands started so far, then kills
// those still running (and any started later) and waits for them.
func (r *Runner) Close(grace time.Duration) {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		r.kill()
		<-done
	}
	r.kill()
}

// first reports whether the state k has not been acted on yet, and
// records it.
func (r *Runner) first(k cache.Key) bool {
	k.DB, k.Gen = "", 0 // a new database judging the same bytes is no new detection
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen.Get(k); ok {
		return false
	}
	r.seen.Put(k, cache.Verdict{})
	return true
}

// Infected acts on an open that d denied as infected: who opened the file
// name in the backing directory dirfd (a descriptor the caller keeps open
// until Infected returns). The first time for this file state it writes
// the audit line (msg "detection", at WARN), quarantines the file if so
// configured, and starts the command if any. Other decisions are ignored.
//
// The command gets these environment variables:
//
//	CLAMFUSE_PATH        the file under the mountpoint
//	CLAMFUSE_SOURCE      the file in the backing directory
//	CLAMFUSE_SIGNATURE   what clamd found
//	CLAMFUSE_PID         the process that opened it
//	CLAMFUSE_UID         its user id
//	CLAMFUSE_CLAMD       the clamd that judged it
//	CLAMFUSE_ACTION      what was done: the "action" of the audit line
//	CLAMFUSE_QUARANTINE  the quarantined file, or "" if it was not moved
func (r *Runner) Infected(d cache.Decision, who cache.Opener, dirfd int, name string) {
	if d.Reason != cache.ReasonInfected || !r.first(d.Key) {
		return
	}
	o := r.opts.Load()
	r.detections.Add(1)
	action := "denied"
	var qpath string
	if o.QuarantineDir != "" {
		q, err := quarantine(o, d, who, dirfd, name, time.Now())
		if err != nil {
			r.quarantineFailed.Add(1)
			action = "quarantine failed: " + err.Error()
		} else {
			r.quarantined.Add(1)
			qpath = q.path
			action = "quarantined to " + q.path
			if q.recordErr != nil {
				action += " (record not written: " + q.recordErr.Error() + ")"
			}
		}
	}
	attrs := []any{
		slog.String("path", who.Path),
		slog.String("signature", d.Verdict.Signature),
		slog.Uint64("pid", uint64(who.Pid)), slog.Uint64("uid", uint64(who.Uid)),
		slog.String("clamd", d.Verdict.Backend),
		slog.String("action", action),
	}
	if qpath != "" {
		attrs = append(attrs, slog.String("quarantine", qpath))
	}
	o.Logger.Warn("detection", attrs...)

	if len(o.Command) > 0 {
		r.start(o, []string{
			"CLAMFUSE_PATH=" + joinRel(o.MountPoint, who.Path),
			"CLAMFUSE_SOURCE=" + joinRel(o.Source, who.Path),
			"CLAMFUSE_SIGNATURE=" + d.Verdict.Signature,
			"CLAMFUSE_PID=" + strconv.FormatUint(uint64(who.Pid), 10),
			"CLAMFUSE_UID=" + strconv.FormatUint(uint64(who.Uid), 10),
			"CLAMFUSE_CLAMD=" + d.Verdict.Backend,
			"CLAMFUSE_ACTION=" + action,
			"CLAMFUSE_QUARANTINE=" + qpath,
		}, who.Path)
	}
}

// joinRel joins a slash-separated path relative to the mount root to dir.
func joinRel(dir, rel string) string {
	if dir == "" {
		return rel
	}
	return path.Join(dir, rel)
}

// describe names a file mode for the record.
func describe(mode uint32) string { return fmt.Sprintf("%#o", mode&0o7777) }
