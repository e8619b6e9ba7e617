package config

import (
	"github.com/clamfuse/clamfuse/clamav"

	"fmt"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Limits enforced by Validate.
const (
	maxTimeout       = time.Hour
	maxMaxConcurrent = 256
	maxSocketPath    = 107 // sun_path is 108 bytes including the NUL
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
	if _, _, err := ParseAddress(c.Clamd.Address); err != nil {
		return fieldErrorf("clamd.address", "%v", err)
	}
	if c.Clamd.Timeout <= 0 {
		return fieldErrorf("clamd.timeout", "must be greater than 0, got %v", c.Clamd.Timeout)
	}
	if c.Clamd.Timeout > Duration(maxTimeout) {
		return fieldErrorf("clamd.timeout", "must be at most %v, got %v", Duration(maxTimeout), c.Clamd.Timeout)
	}
	if n := c.Clamd.MaxConcurrent; n < 1 || n > maxMaxConcurrent {
		return fieldErrorf("clamd.max_concurrent", "must be between 1 and %d, got %d", maxMaxConcurrent, n)
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

	if c.Cache.MaxEntries < 1 {
		return fieldErrorf("cache.max_entries", "must be at least 1, got %d", c.Cache.MaxEntries)
	}
	if c.Cache.TTL <= 0 {
		return fieldErrorf("cache.ttl", "must be greater than 0, got %v", c.Cache.TTL)
	}

	if err := oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return err
	}
	return oneOf("log.format", c.Log.Format, "text", "json")
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
	return nil
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
