package config

import (
	"github.com/clamfuse/clamfuse/clamav"

	"fmt"
	"net"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Limits enforced by Validate.
const (
	maxTimeout = time.Hour
	// maxWatchedTimeout bounds mount.watched_attr_timeout: should an event
	// ever be lost, a stale name or attribute lasts no longer.
	maxWatchedTimeout = 24 * time.Hour
	maxMaxConcurrent  = 256
	maxSocketPath     = 107 // sun_path is 108 bytes including the NUL
	maxBackends       = 32
	minCheckInterval  = 100 * time.Millisecond
)

// fieldError is a problem with the value of one key. Parse uses key to find
// the line; Error does not show it twice.
type fieldError struct {
	key string // dotted, as in the schema
	msg string
}

func (e *fieldError) Error() string { return e.key + ": " + e.msg }

func fieldErrorf(key, format string, args ...any) error {
	return &fieldError{key: key, msg: fmt.Sprintf(format, args...)}
}

// Validate checks ranges and choices and returns the first problem, as
// "key: what is wrong". It does not look at the filesystem, and it allows an
// empty mount.source and mount.target, which may come from the command line;
// see ValidateMount.
func (c Config) Validate() error {
	if len(c.Clamd.Address) == 0 {
		return fieldErrorf("clamd.address", "must be set")
	}
	if len(c.Clamd.Address) > maxBackends {
		return fieldErrorf("clamd.address", "at most %d addresses, got %d", maxBackends, len(c.Clamd.Address))
	}
	seen := map[string]bool{}
	for _, a := range c.Clamd.Address {
		network, addr, err := ParseAddress(a)
		if err != nil {
			return fieldErrorf("clamd.address", "%v", err)
		}
		if seen[network+" "+addr] {
			return fieldErrorf("clamd.address", "%q is listed twice", a)
		}
		seen[network+" "+addr] = true
	}
	if c.Clamd.Timeout <= 0 {
		return fieldErrorf("clamd.timeout", "must be greater than 0, got %v", c.Clamd.Timeout)
	}
	if c.Mount.AttrTimeout < 0 || c.Mount.AttrTimeout > Duration(time.Hour) {
		return fieldErrorf("mount.attr_timeout", "must be between 0s and 1h, got %v", c.Mount.AttrTimeout)
	}
	if c.Mount.MaxOpenPerUser < 0 {
		return fieldErrorf("mount.max_open_per_user", "must be 0 (derived from the descriptor limit) or more, got %d", c.Mount.MaxOpenPerUser)
	}
	if err := oneOf("mount.passthrough", c.Mount.Passthrough, "auto", "off"); err != nil {
		return err
	}
	if err := oneOf("mount.invalidation", c.Mount.Invalidation, "auto", "off"); err != nil {
		return err
	}
	if err := oneOf("mount.readdirplus", c.Mount.ReaddirPlus, "auto", "on", "off"); err != nil {
		return err
	}
	if d := c.Mount.WatchedAttrTimeout; d < 0 || d > Duration(maxWatchedTimeout) {
		return fieldErrorf("mount.watched_attr_timeout", "must be between 0s and %v, got %v", Duration(maxWatchedTimeout), d)
	}
	if c.Clamd.Timeout > Duration(maxTimeout) {
		return fieldErrorf("clamd.timeout", "must be at most %v, got %v", Duration(maxTimeout), c.Clamd.Timeout)
	}
	if n := c.Clamd.MaxConcurrent; n < 1 || n > maxMaxConcurrent {
		return fieldErrorf("clamd.max_concurrent", "must be between 1 and %d, got %d", maxMaxConcurrent, n)
	}

	if d := c.Clamd.CheckInterval; d < Duration(minCheckInterval) || d > Duration(maxTimeout) {
		return fieldErrorf("clamd.check_interval", "must be between %v and %v, got %v", Duration(minCheckInterval), Duration(maxTimeout), d)
	}
	if err := optionalAbsPath("clamd.database_dir", c.Clamd.DatabaseDir); err != nil {
		return err
	}
	if d := c.Clamd.ReloadWindow; d < 0 || d > Duration(maxTimeout) {
		return fieldErrorf("clamd.reload_window", "must be between 0s and %v, got %v", Duration(maxTimeout), d)
	}
	if err := oneOf("clamd.transport", c.Clamd.Transport, "auto", "instream", "fildes"); err != nil {
		return err
	}
	if c.Clamd.Transport == "fildes" {
		for _, a := range c.Clamd.Address {
			if network, _, _ := ParseAddress(a); network != "unix" {
				return fieldErrorf("clamd.transport", `"fildes" needs unix-socket addresses (clamd on this machine), but %q is not one; use "auto" or "instream"`, a)
			}
		}
	}

	if c.Scan.MaxSize < 1 {
		return fieldErrorf("scan.max_size", "must be at least 1, got %d", int64(c.Scan.MaxSize))
	}
	if err := oneOf("scan.on_oversize", c.Scan.OnOversize, "deny", "allow"); err != nil {
		return err
	}
	if err := oneOf("scan.on_error", c.Scan.OnError, "deny", "allow"); err != nil {
		return err
	}
	if err := oneOf("scan.while_written", c.Scan.WhileWritten, "rescan", "deny"); err != nil {
		return err
	}
	for _, g := range c.Scan.Exclude {
		switch {
		case g == "":
			return fieldErrorf("scan.exclude", "empty pattern")
		case strings.HasPrefix(g, "/"):
			return fieldErrorf("scan.exclude", "pattern %q must be relative to the mount root", g)
		}
		if _, err := path.Match(g, ""); err != nil {
			return fieldErrorf("scan.exclude", "invalid pattern %q: %v", g, err)
		}
	}

	if err := c.validateRollout(); err != nil {
		return err
	}

	if c.Cache.MaxEntries < 1 {
		return fieldErrorf("cache.max_entries", "must be at least 1, got %d", c.Cache.MaxEntries)
	}
	if c.Cache.TTL <= 0 {
		return fieldErrorf("cache.ttl", "must be greater than 0, got %v", c.Cache.TTL)
	}
	if c.Cache.VerifyMaxSize < 0 {
		return fieldErrorf("cache.verify_max_size", "must be at least 0, got %d", int64(c.Cache.VerifyMaxSize))
	}

	if err := c.validateActions(); err != nil {
		return err
	}
	if err := validateListen("metrics.listen", c.Metrics.Listen); err != nil {
		return err
	}

	if err := oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return err
	}
	if d := c.Log.RepeatInterval; d < 0 || d > Duration(maxTimeout) {
		return fieldErrorf("log.repeat_interval", "must be between 0s and %v, got %v", Duration(maxTimeout), d)
	}
	return oneOf("log.format", c.Log.Format, "text", "json")
}

// validateRollout checks the keys of a gradual rollout: the mode, the
// allow lists, the openers that skip the scan, and the state file.
func (c Config) validateRollout() error {
	s := c.Scan
	if err := oneOf("scan.mode", s.Mode, "enforce", "audit"); err != nil {
		return err
	}
	for _, h := range s.AllowSHA256 {
		if !isSHA256(h) {
			return fieldErrorf("scan.allow_sha256", "want 64 hexadecimal digits (sha256sum's output), got %q", h)
		}
	}
	for _, sig := range s.AllowSignatures {
		if sig == "" || strings.TrimSpace(sig) != sig || strings.IndexFunc(sig, isControl) >= 0 {
			return fieldErrorf("scan.allow_signatures", "want a signature name as clamd reports it, got %q", sig)
		}
	}
	for _, uid := range s.ExcludeUIDs {
		if uid < 0 || uid > maxUID {
			return fieldErrorf("scan.exclude_uids", "must be between 0 and %d, got %d", maxUID, uid)
		}
	}
	for _, p := range s.ExcludeExe {
		if err := optionalAbsPath("scan.exclude_exe", p); err != nil || p == "" {
			return fieldErrorf("scan.exclude_exe", "want the absolute path of a program, got %q", p)
		}
		if filepath.Clean(p) != p {
			return fieldErrorf("scan.exclude_exe", "want a clean path (no \"..\", \".\", \"//\" or trailing \"/\"), got %q", p)
		}
	}
	if f := c.Cache.StateFile; f != "auto" {
		if err := optionalAbsPath("cache.state_file", f); err != nil {
			return fieldErrorf("cache.state_file", "want \"auto\", an absolute path or \"\" (none), got %q", f)
		}
	}
	return nil
}

// maxUID is the highest uid: (uid_t)-1 is no user.
const maxUID = 1<<32 - 2

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return true
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

func (c Config) validateActions() error {
	a := c.Actions
	if err := optionalAbsPath("actions.quarantine_dir", a.QuarantineDir); err != nil {
		return err
	}
	if len(a.OnInfected) > 0 {
		if !filepath.IsAbs(a.OnInfected[0]) {
			return fieldErrorf("actions.on_infected", "the command must be an absolute path (no shell, no PATH lookup), got %q", a.OnInfected[0])
		}
		for _, arg := range a.OnInfected {
			if strings.IndexByte(arg, 0) >= 0 {
				return fieldErrorf("actions.on_infected", "must not contain a NUL byte, got %q", arg)
			}
		}
	}
	if d := a.OnInfectedTimeout; d <= 0 || d > Duration(maxTimeout) {
		return fieldErrorf("actions.on_infected_timeout", "must be greater than 0 and at most %v, got %v", Duration(maxTimeout), d)
	}
	return nil
}

// optionalAbsPath checks a path setting that is off when "".
func optionalAbsPath(key, p string) error {
	switch {
	case p == "":
		return nil
	case strings.IndexByte(p, 0) >= 0:
		return fieldErrorf(key, "must not contain a NUL byte, got %q", p)
	case !filepath.IsAbs(p):
		return fieldErrorf(key, "must be an absolute path, got %q", p)
	}
	return nil
}

// validateListen checks a host:port to listen on; "" is off. An empty
// host means every interface, which must then be written as ":PORT".
func validateListen(key, s string) error {
	if s == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fieldErrorf(key, "want host:port such as \"127.0.0.1:9323\", got %q", s)
	}
	if strings.ContainsAny(host, " /") {
		return fieldErrorf(key, "invalid host in %q", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fieldErrorf(key, "invalid port in %q", s)
	}
	return nil
}

// oneOf returns an error naming key unless v is one of choices.
func oneOf(key, v string, choices ...string) error {
	for _, c := range choices {
		if v == c {
			return nil
		}
	}
	q := make([]string, len(choices))
	for i, c := range choices {
		q[i] = fmt.Sprintf("%q", c)
	}
	list := strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
	if len(q) > 2 {
		list = "one of " + list
	}
	return fieldErrorf(key, "must be %s, got %q", list, v)
}

// ValidateMount checks what Validate leaves to the caller's choice: that
// mount.source and mount.target are set and absolute, and that the target is
// not inside the source (the filesystem would then contain itself; equal
// paths are fine). It compares the paths lexically and does not look at the
// filesystem; errors are "key: what is wrong".
func (c Config) ValidateMount() error {
	for _, p := range []struct{ key, val string }{
		{"mount.source", c.Mount.Source},
		{"mount.target", c.Mount.Target},
	} {
		switch {
		case p.val == "":
			return fieldErrorf(p.key, "must be set")
		case strings.IndexByte(p.val, 0) >= 0:
			return fieldErrorf(p.key, "must not contain a NUL byte, got %q", p.val)
		case !filepath.IsAbs(p.val):
			return fieldErrorf(p.key, "must be an absolute path, got %q", p.val)
		}
	}
	rel, err := filepath.Rel(filepath.Clean(c.Mount.Source), filepath.Clean(c.Mount.Target))
	if err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") {
		return fieldErrorf("mount.target", "must not be inside mount.source (%q), got %q", c.Mount.Source, c.Mount.Target)
	}
	// Quarantined files must not be served (they would be scanned and
	// moved again), and clamfuse must never write through its own mount
	// (the quarantine, the state file).
	for _, own := range []struct{ key, val string }{
		{"actions.quarantine_dir", c.Actions.QuarantineDir},
		{"cache.state_file", c.Cache.StateFile},
	} {
		if own.val == "" || own.val == "auto" {
			continue
		}
		for _, p := range []struct{ key, val string }{
			{"mount.source", c.Mount.Source},
			{"mount.target", c.Mount.Target},
		} {
			if inside(own.val, p.val) {
				return fieldErrorf(own.key, "must not be inside %s (%q), got %q", p.key, p.val, own.val)
			}
		}
	}
	return nil
}

// inside reports whether p is dir or below it, lexically.
func inside(p, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// IsExcluded reports whether the file at rel, a slash-separated path relative
// to the mount root without a leading slash, is exempt from scanning: a
// pattern in scan.exclude (path.Match syntax) matches the whole of rel or,
// for a pattern without "/", its last element. So "*.iso" matches
// "a/b/x.iso", and "tmp/*" matches "tmp/x" but not "a/tmp/x" or "tmp/a/x".
// The root itself is never excluded.
func (c Config) IsExcluded(rel string) bool {
	if rel == "" || rel == "." {
		return false
	}
	base := path.Base(rel)
	for _, g := range c.Scan.Exclude {
		if ok, _ := path.Match(g, rel); ok {
			return true
		}
		if !strings.Contains(g, "/") {
			if ok, _ := path.Match(g, base); ok {
				return true
			}
		}
	}
	return false
}

// ParseAddress splits a clamd address into arguments for net.Dial:
//
//	/run/clamav/clamd.ctl       -> "unix", "/run/clamav/clamd.ctl"
//	unix:/run/clamav/clamd.ctl  -> "unix", "/run/clamav/clamd.ctl"
//	tcp://127.0.0.1:3310        -> "tcp", "127.0.0.1:3310"
//
// The clamav package owns the syntax; errors name the value.
func ParseAddress(s string) (network, addr string, err error) {
	return clamav.ParseAddress(s)
}
