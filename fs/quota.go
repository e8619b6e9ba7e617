package fs

import (
	"golang.org/x/sys/unix"
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
