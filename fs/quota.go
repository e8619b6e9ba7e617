package fs

import (
	"context"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Descriptor limits. clamfuse runs as root in front of every local user,
// and each of them can make it hold descriptors: one per file or
// directory open through the mount, one per directory the kernel knows.
// Without bounds one user holding ~20 000 opens, or walking 20 000
// directories, used up RLIMIT_NOFILE and every open by anyone failed
// with EMFILE. So the descriptors are split up front:
//
//   - Reserve: never handed out on a caller's behalf. clamfuse's own work
//     uses it: the backing root, /dev/fuse, clamd connections and the
//     descriptors of scans, prewarm, quarantine, logs, metrics, and the
//     short-lived descriptors each request opens and closes.
//   - DirFDs: the O_PATH descriptors directory nodes cache (dirfd.go);
//     past that many the least recently used is closed, and that
//     directory is found again by its path when next needed.
//   - Orphans: descriptors of files deleted through the mount, kept for
//     half a second (Node.keepOrphan); past that many none is kept.
//   - MaxOpen: the rest, for handles of open files and directories, in
//     all. An open that would pass it fails with ENFILE.
//   - MaxOpenPerUser: the handles one uid may hold at once. An open past
//     it fails with EMFILE for that uid alone: "too many open files" is
//     what the caller sees when it has too many open, and it is cured
//     the same way, by closing some of its own. Root (uid 0) is counted
//     like every uid, with the same limit: a runaway process of root's
//     going through the mount cannot starve the users either, and
//     root's own count is apart from theirs, so root can still open
//     files while a user is at its limit. clamfuse's own work does not
//     go through the mount and is not counted here.
//
// An open waiting for its verdict holds two descriptors (the file and
// its directory, which the actions on a detection need), so it counts
// twice until the gate has decided: a user can hold MaxOpenPerUser files
// open, but fewer while they wait for scans.

// Limits are the descriptor limits of a mount; see DeriveLimits.
type Limits struct {
	NoFile         int // RLIMIT_NOFILE (soft) clamfuse runs with
	Reserve        int // left for clamfuse's own work
	DirFDs         int // directory descriptors cached
	Orphans        int // descriptors of deleted files kept
	MaxOpen        int // handles of open files and directories, all users
	MaxOpenPerUser int // handles per uid
}

// DeriveLimits splits nofile descriptors: an eighth (64 to 4096) in
// reserve, as many (16 to 4096) for directories, 1/64 (8 to 256) for
// deleted files, the rest for open files; a user may hold a quarter of
// those, unless perUser (mount.max_open_per_user) is not 0.
func DeriveLimits(nofile, perUser int) Limits {
	l := Limits{
		NoFile:  nofile,
		Reserve: clampInt(nofile/8, 64, 4096),
		DirFDs:  clampInt(nofile/8, 16, 4096),
		Orphans: clampInt(nofile/64, 8, 256),
	}
	l.MaxOpen = max(nofile-l.Reserve-l.DirFDs-l.Orphans, 1)
	l.MaxOpenPerUser = perUser
	if perUser <= 0 {
		l.MaxOpenPerUser = max(l.MaxOpen/4, 1)
	}
	return l
}

func clampInt(v, lo, hi int) int { return min(max(v, lo), hi) }

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and
// returns it. The Go runtime does the same at start (and restores the
// old soft limit in processes it starts, such as actions.on_infected
// commands); this makes sure of it, and says what the limits are
// derived from.
func RaiseNoFile() (int, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return int(min(rl.Cur, 1<<30)), nil
}

// currentLimits derives the limits from the current RLIMIT_NOFILE, for
// a filesystem made without Options.Limits.
func currentLimits() Limits {
	var rl unix.Rlimit
	nofile := 1024
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		nofile = int(min(rl.Cur, 1<<30))
	}
	return DeriveLimits(nofile, 0)
}

// quotaLogInterval is how often a refusal is logged, per uid: the first
// refusal of an interval is, the others are counted in the next line.
const quotaLogInterval = time.Minute

// quota counts the descriptors held for open handles, per uid and in
// all, and refuses an open past Limits.MaxOpenPerUser (EMFILE) or
// Limits.MaxOpen (ENFILE).
type quota struct {
	perUser, total int
	log            *slog.Logger

	mu     sync.Mutex        // guards the fields below; a leaf lock
	used   map[uint32]int    // descriptors held per uid; uids holding none are absent
	sum    int               // all of used
	logged map[uint32]warned // refusals logged, per uid (allUsers for ENFILE)
	turns  map[uint32]warned // requests refused a turn logged, per uid

	refused Refusals // counted, under mu
}

// Refusals count the calls refused for a limit on what users hold: opens
// past mount.max_open_per_user (EMFILE) and past the descriptors for
// open files in all (ENFILE), and requests refused a turn, their user's
// waiting requests too many or carrying too much (ENOMEM).
type Refusals struct {
	PerUser, Total, Waiting uint64
}

// Refusals returns the calls refused so far for a limit on what users
// hold (metrics).
func (m *Mounted) Refusals() Refusals {
	q := m.fsys.quota
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.refused
}

// warned is when a refusal was last logged, and how many were not since.
type warned struct {
	at     time.Time
	missed int
}

// allUsers keys the refusals for want of descriptors in all.
const allUsers = ^uint32(0)

func newQuota(l Limits, log *slog.Logger) *quota {
	return &quota{perUser: l.MaxOpenPerUser, total: l.MaxOpen, log: log,
		used: map[uint32]int{}, logged: map[uint32]warned{}, turns: map[uint32]warned{}}
}

// take charges an open by uid (two descriptors while it is made; see
// settle), or refuses it with EMFILE or ENFILE.
func (q *quota) take(uid, pid uint32) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.used[uid]
	switch {
	case u+1 > q.perUser:
		q.refused.PerUser++
		q.refusedLocked(uid, uid, pid, u)
		return fuse.Errno(syscall.EMFILE)
	case q.sum+1 > q.total:
		q.refused.Total++
		q.refusedLocked(allUsers, uid, pid, u)
		return fuse.Errno(syscall.ENFILE)
	}
	q.used[uid] = u + 2
	q.sum += 2
	return nil
}

// settle ends the charge of take once the open is made: one descriptor
// stays charged for the handle if ok, none otherwise.
func (q *quota) settle(uid uint32, ok bool) {
	if ok {
		q.give(uid, 1)
	} else {
		q.give(uid, 2)
	}
}

// give returns k descriptors of uid: a handle released (1), or settle.
func (q *quota) give(uid uint32, k int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	u := q.used[uid] - k
	if u <= 0 {
		delete(q.used, uid)
	} else {
		q.used[uid] = u
	}
	q.sum -= k
}

// held returns the descriptors charged to uid, for tests.
func (q *quota) held(uid uint32) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.used[uid]
}

// refusedLocked logs the first refusal for key (uid, or allUsers when
// the descriptors ran out in all) in each quotaLogInterval at WARN,
// with the number not logged since; uid holds held descriptors.
func (q *quota) refusedLocked(key, uid, pid uint32, held int) {
	missed, log := logNow(q.logged, key)
	if !log {
		return
	}
	if key == allUsers {
		q.log.Warn("open refused: the descriptors for open files are all in use (ENFILE)",
			"uid", uid, "pid", pid, "open", q.sum, "max_open", q.total, "not_logged", missed)
		return
	}
	q.log.Warn("open refused: user at mount.max_open_per_user (EMFILE)",
		"uid", uid, "pid", pid, "open", held, "max_open_per_user", q.perUser, "not_logged", missed)
}

// logNow reports whether a refusal for key is to be logged now, the
// first in each quotaLogInterval, and how many were not since; logged
// records them (at most 64 keys kept beyond the interval).
func logNow(logged map[uint32]warned, key uint32) (missed int, log bool) {
	now := time.Now()
	w, ok := logged[key]
	if ok && now.Sub(w.at) < quotaLogInterval {
		w.missed++
		logged[key] = w
		return 0, false
	}
	if len(logged) >= 64 {
		for k, old := range logged {
			if now.Sub(old.at) >= quotaLogInterval {
				delete(logged, k)
			}
		}
	}
	logged[key] = warned{at: now}
	return w.missed, true
}

// Open opens n for the caller, within the caller's share of descriptors
// (see quota); openNode does the work.
func (n *Node) Open(ctx context.Context, req *fuse.OpenRequest, resp *fuse.OpenResponse) (fusefs.Handle, error) {
	if err := n.fsys.quota.take(req.Uid, req.Pid); err != nil {
		return nil, err
	}
	h, err := n.openNode(ctx, req, resp)
	n.fsys.quota.settle(req.Uid, err == nil)
	return h, err
}

// Create makes and opens a file for the caller, within the caller's
// share of descriptors (see quota); createNode does the work.
func (n *Node) Create(ctx context.Context, req *fuse.CreateRequest, resp *fuse.CreateResponse) (fusefs.Node, fusefs.Handle, error) {
	if err := n.fsys.quota.take(req.Uid, req.Pid); err != nil {
		return nil, nil, err
	}
	child, h, err := n.createNode(ctx, req, resp)
	n.fsys.quota.settle(req.Uid, err == nil)
	return child, h, err
}

// callerTurns bound each user's requests served at once, and what
// those waiting for a turn hold (fusefs.Server.SetTurns), with
// caller.Queue, Enter and Leave: a request waits in the kernel, on a
// thread of clamfuse's, for as long as another process holds a lock it
// needs, which any user can do at will (see
// fs/internal/caller/inflight.go). A refusal is logged as the quota's
// are.
type callerTurns struct{ q *quota }

func (c callerTurns) Queue(uid, pid uint32, bytes int) (<-chan struct{}, bool) {
	turn, ok := caller.Queue(uid, bytes)
	if !ok {
		c.q.mu.Lock()
		c.q.refused.Waiting++
		missed, log := logNow(c.q.turns, uid)
		c.q.mu.Unlock()
		if log {
			c.q.log.Warn("request refused (ENOMEM): the user has too many requests waiting for their turn, or they carry too much data",
				"uid", uid, "pid", pid, "max_in_flight", caller.MaxInFlight, "max_waiting", caller.MaxWaiting,
				"max_waiting_bytes", caller.MaxWaitingBytes, "not_logged", missed)
		}
	}
	return turn, ok
}
func (callerTurns) Enter(uid uint32) { caller.Enter(uid) }
func (callerTurns) Leave(uid uint32) { caller.Leave(uid) }
