package cache

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Opens that skip the scan because of who opens.
//
// scan.exclude_uids and scan.exclude_exe name openers trusted with
// unscanned bytes, such as a backup agent that reads everything: their
// opens are allowed without asking the cache or clamd, and nothing they
// open is cached, so a file read only by them stays unscanned for
// everyone else. They are counted (Stats.Excluded, and the reasons
// excluded-uid and excluded-exe), and logged at debug only.
//
// A uid is the one in the FUSE request: the opener's filesystem uid.
//
// A program is the file /proc/PID/exe of the opener (PID from the FUSE
// request: the thread that opened, which /proc serves too) links to. It
// counts when that link reads as the program's path, symlinks resolved,
// and the file it leads to is the very file (device, inode) found at that
// path when the configuration was (re)loaded: a file put at that path
// later does not count until the next reload. The opener may execute
// another program between its open and this check; a thread that does so
// replaces every other thread of its process, the opener included, which
// then never gets the file. So the program that gets the file is the one
// checked, or the opener is gone. Every process running an excluded
// program, whoever started it, is trusted: list only programs that no
// untrusted user can run (or attach to with ptrace).

// Exe is a program whose opens skip the scan.
type Exe struct {
	Path     string // as configured
	Real     string // with symlinks resolved, as /proc/PID/exe shows it; "" if not found
	Dev, Ino uint64 // the file found there
}

// ResolveExe finds the program at path now. The error says why none is
// found there (Exe then matches no opener); weak, when not "", why the
// program found is not safe to trust: a user other than root may replace
// or change it.
func ResolveExe(path string) (e Exe, weak string, err error) {
	e.Path = path
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return e, "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return e, "", &os.PathError{Op: "stat", Path: real, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return e, "", fmt.Errorf("%s is not a regular file", real)
	}
	e.Real, e.Dev, e.Ino = real, st.Dev, st.Ino
	switch {
	case st.Uid != 0:
		weak = fmt.Sprintf("owned by uid %d", st.Uid)
	case st.Mode&0o022 != 0:
		weak = fmt.Sprintf("writable by others (mode %#o)", st.Mode&0o7777)
	default:
		var dir unix.Stat_t
		if err := unix.Stat(filepath.Dir(real), &dir); err == nil && (dir.Uid != 0 || dir.Mode&0o022 != 0 && dir.Mode&unix.S_ISVTX == 0) {
			weak = fmt.Sprintf("in a directory others may write to (%s)", filepath.Dir(real))
		}
	}
	return e, weak, nil
}

// excludedOpener says whether who skips the scan under p, and why.
func (g *Gate) excludedOpener(p *Policy, who Opener) (Reason, bool) {
	if p.ExcludeUIDs[who.Uid] {
		return ReasonExcludedUID, true
	}
	if len(p.ExcludeExes) == 0 || who.Pid == 0 {
		return "", false // pid 0: an opener in a pid namespace clamfuse cannot see
	}
	proc := "/proc/" + strconv.FormatUint(uint64(who.Pid), 10) + "/exe"
	link, err := os.Readlink(proc)
	if err != nil {
		return "", false // gone, or a kernel thread
	}
	for _, e := range p.ExcludeExes {
		if e.Real == "" || link != e.Real {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(proc, &st); err != nil {
			return "", false
		}
		if st.Dev == e.Dev && st.Ino == e.Ino {
			return ReasonExcludedExe, true
		}
		g.repeats.log(g.log, p.LogRepeat, slog.LevelWarn, repeatKey{msg: msgExeReplaced, kind: e.Path},
			msgExeReplaced, []any{slog.String("path", who.Path), slog.Uint64("pid", uint64(who.Pid)),
				slog.Uint64("uid", uint64(who.Uid)), slog.String("exe", e.Path)})
		return "", false
	}
	return "", false
}

const msgExeReplaced = "opener runs a program at an excluded path that is not the file found there at the last (re)load; scanned (reload clamfuse after replacing the program)"
