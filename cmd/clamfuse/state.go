package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
)

// The state file (cache.state_file): verdicts kept across restarts
// (cache/state.go). It is read once at start, before the mount, and
// written every stateInterval and once more at a clean shutdown, after
// the unmount.

// stateInterval is how often the state file is written while mounted.
const stateInterval = 5 * time.Minute

// defaultStateDir holds the state files of "auto" when systemd gives no
// $STATE_DIRECTORY (StateDirectory= in the unit).
const defaultStateDir = "/var/lib/clamfuse"

// statePath resolves cache.state_file for the mount at target (absolute):
// "auto" is one file per mountpoint in $STATE_DIRECTORY (its first
// directory) or /var/lib/clamfuse, named for the mountpoint as
// systemd-escape --path names it, so each clamfuse@NAME instance and each
// fstab mount has its own; "" is none.
func statePath(setting, target string) string {
	if setting != "auto" {
		return setting
	}
	dir := defaultStateDir
	if env, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); filepath.IsAbs(env) {
		dir = env
	}
	return filepath.Join(dir, escapePath(target)+".state")
}

// escapePath is systemd-escape --path: "/srv/in coming" is
// "srv-in\x20coming", "/" is "-".
func escapePath(p string) string {
	p = strings.Trim(filepath.Clean(p), "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '/':
			b.WriteByte('-')
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == ':', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// stateFile is the state file of one mount.
type stateFile struct {
	path string       // "" for none
	root cache.RootID // the backing root's filesystem
}

// openState identifies the backing root src (before it is mounted over)
// and restores the verdicts of the state file at path into g. Nothing
// here is fatal: a state file that cannot be used is logged at WARN and
// left alone, and the next save replaces it.
func (s *service) openState(path, src string) {
	if path == "" {
		return
	}
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		s.state.root, err = cache.RootOf(fd)
		unix.Close(fd)
	}
	if err != nil {
		s.log.Warn("cannot identify the backing filesystem; verdicts are not kept across restarts", "source", src, "err", err)
		return
	}
	s.state.path = path
	st, err := cache.ReadState(path, s.state.root)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.log.Info("no state file yet; verdicts will be kept there across restarts", "state_file", path)
	case err != nil:
		s.log.Warn("state file ignored", "state_file", path, "err", err)
	default:
		s.gate.Restore(st)
	}
}

// saveState writes the state file, if any; it logs a failure at WARN.
func (s *service) saveState() {
	if s.state.path == "" {
		return
	}
	n, wrote, err := s.gate.SaveState(s.state.path, s.state.root)
	switch {
	case err != nil:
		s.log.Warn("cannot write the state file", "state_file", s.state.path, "err", err)
	case wrote:
		s.log.Debug("state file written", "state_file", s.state.path, "verdicts", n)
	}
}
