// Package config loads, validates and prints clamfuse's TOML configuration.
//
// Loading is strict: a key the schema does not know, even one that differs
// only in case, is an error with its line, as is a value of the wrong TOML
// type. Every error is a single line that starts with the file name.
package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration file. The zero value is not useful; start
// from Default.
type Config struct {
	Mount   Mount   `toml:"mount"`
	Clamd   Clamd   `toml:"clamd"`
	Scan    Scan    `toml:"scan"`
	Cache   Cache   `toml:"cache"`
	Actions Actions `toml:"actions"`
	Metrics Metrics `toml:"metrics"`
	Log     Log     `toml:"log"`
}

// Mount says what to mount where.
type Mount struct {
	Source     string `toml:"source"` // backing directory
	Target     string `toml:"target"` // mountpoint; may equal Source
	AllowOther bool   `toml:"allow_other"`
	ReadOnly   bool   `toml:"read_only"`
	// AttrTimeout is how long the kernel may trust names and attributes
	// without asking where changes made directly in the backing directory
	// are not watched: longer is faster, but such changes show up that
	// much later (opens are always judged on the file's current state).
	AttrTimeout Duration `toml:"attr_timeout"`
	// MaxOpenPerUser is how many files and directories one user (uid,
	// root included) may hold open through the mount at once; past it
	// an open fails with EMFILE for that user alone. 0 derives it from
	// RLIMIT_NOFILE: a quarter of the descriptors left for open files
	// once clamfuse's reserve and its directory cache are set aside.
	MaxOpenPerUser int `toml:"max_open_per_user"`
	// Invalidation is "auto" to watch the backing filesystem (fanotify)
	// and tell the kernel of every change made there at once, where the
	// kernel, clamfuse's privileges and the filesystem allow it, or "off".
	Invalidation string `toml:"invalidation"`
	// WatchedAttrTimeout replaces AttrTimeout where changes are watched.
	WatchedAttrTimeout Duration `toml:"watched_attr_timeout"`
	// ReaddirPlus is when the kernel gets a directory's entries with
	// their attributes in one reply (READDIRPLUS): "auto" (the kernel's
	// heuristics), "on" (every listing) or "off".
	ReaddirPlus string `toml:"readdirplus"`
	// Passthrough is "auto" to have the kernel read, write and map the
	// files the gate allowed itself (FUSE passthrough, Linux 6.9+),
	// where the kernel and the backing filesystem allow it, or "off".
	Passthrough string `toml:"passthrough"`
}

// Clamd says how to reach clamd.
type Clamd struct {
	// Address is one clamd or several (see ParseAddress); scans are spread
	// over the healthy ones and fail over to another on transport errors.
	Address       Addresses `toml:"address"`
	Timeout       Duration  `toml:"timeout"` // per scan
	MaxConcurrent int       `toml:"max_concurrent"`
	// CheckInterval is how often each clamd is asked for VERSION: its
	// health, and the signature database version in the cache keys.
	CheckInterval Duration `toml:"check_interval"`
	// DatabaseDir, when set, is clamd's DatabaseDirectory (clamd on this
	// machine): a change there makes every cached verdict stale at once.
	DatabaseDir string `toml:"database_dir"`
	// ReloadWindow is how long after a change in DatabaseDir no verdict is
	// cached (clamd may still be loading the new database), after which
	// the cache is invalidated once more. Longer than clamd takes to reload.
	ReloadWindow Duration `toml:"reload_window"`
	// Transport is how file contents reach clamd: "instream" streams them
	// over the connection; "fildes" passes the open descriptor over a unix
	// socket and clamd reads the file itself (clamd on this machine only);
	// "auto" is fildes for unix-socket addresses, instream for TCP.
	Transport string `toml:"transport"`
}

// Scan is the scanning policy.
type Scan struct {
	MaxSize    Size     `toml:"max_size"`
	OnOversize string   `toml:"on_oversize"` // "deny" or "allow"
	OnError    string   `toml:"on_error"`    // "deny" or "allow"
	Exclude    []string `toml:"exclude"`     // path.Match globs; see IsExcluded
	// Prewarm walks the tree once at mount time, one file at a time and
	// only while no open waits for a scan, and caches the verdicts, so
	// that first opens find them.
	Prewarm bool `toml:"prewarm"`
	// WhileWritten is what an open for reading gets while another
	// process has the file open for writing through the mount: "rescan"
	// (the writer's pages are written back and the file is scanned as it
	// is, never judged from the cache) or "deny" (refused with ETXTBSY,
	// as are opens for writing while another process reads it).
	WhileWritten string `toml:"while_written"`
	// Mode is "enforce" (an infected file, or one without a verdict the
	// policy denies, cannot be opened) or "audit" (everything is scanned,
	// logged and counted as in enforce, but such opens are allowed, each
	// logged as an audit allowance).
	Mode string `toml:"mode"`
	// AllowSHA256 lists SHA-256 digests (hex) of files that are allowed
	// although clamd reports a detection (false positives); the digest
	// is taken from the scanned descriptor on a detection only.
	AllowSHA256 []string `toml:"allow_sha256"`
	// AllowSignatures lists signature names (as clamd reports them) that
	// are logged but do not deny.
	AllowSignatures []string `toml:"allow_signatures"`
	// ExcludeUIDs are users whose opens skip the scan (and the cache).
	ExcludeUIDs []int64 `toml:"exclude_uids"`
	// ExcludeExe are absolute paths of programs whose opens skip the scan
	// (and the cache), checked through /proc/PID/exe of the opener.
	ExcludeExe []string `toml:"exclude_exe"`
}

// Cache bounds the verdict cache.
type Cache struct {
	MaxEntries int      `toml:"max_entries"`
	TTL        Duration `toml:"ttl"`
	// VerifyMaxSize: a cached clean verdict of a file up to this size is
	// used only while a digest of the file's contents is the one taken
	// when it was scanned (writes outside the mount that leave size and
	// times alone); 0 verifies nothing.
	VerifyMaxSize Size `toml:"verify_max_size"`
	// StateFile is where verdicts are kept across restarts: "auto" (a
	// file per mount under $STATE_DIRECTORY or /var/lib/clamfuse), an
	// absolute path, or "" for none.
	StateFile string `toml:"state_file"`
}

// Actions say what to do, besides denying the open, when a file is found
// infected. Each runs at most once per file state.
type Actions struct {
	// QuarantineDir, when set, is where infected files are moved, each
	// with a NAME.json record beside it. A failed move leaves the file
	// where it was.
	QuarantineDir string `toml:"quarantine_dir"`
	// OnInfected, when set, is a command (argv, no shell) run in the
	// background with CLAMFUSE_* environment variables.
	OnInfected        []string `toml:"on_infected"`
	OnInfectedTimeout Duration `toml:"on_infected_timeout"` // then it is killed
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `toml:"listen"` // host:port serving /metrics; "" for none
}

// Log configures the logger.
type Log struct {
	Level  string `toml:"level"`  // "debug", "info", "warn" or "error"
	Format string `toml:"format"` // "text" or "json"
	// RepeatInterval: a line that repeats (a denial of one file state, an
	// error of one kind) is logged once per interval, with the count of
	// those left out; 0 logs every one.
	RepeatInterval Duration `toml:"repeat_interval"`
}

// Default returns the configuration used for every key a file leaves out.
// Mount.Source and Mount.Target are empty.
func Default() Config {
	return Config{
		Mount: Mount{
			AttrTimeout:        Duration(time.Second),
			Invalidation:       "auto",
			WatchedAttrTimeout: Duration(time.Hour),
			ReaddirPlus:        "auto",
			Passthrough:        "auto",
		},
		Clamd: Clamd{
			Address:       Addresses{"/run/clamav/clamd.ctl"},
			Timeout:       Duration(60 * time.Second),
			MaxConcurrent: 4,
			CheckInterval: Duration(10 * time.Second),
			ReloadWindow:  Duration(60 * time.Second),
			Transport:     "auto",
		},
		Scan: Scan{
			MaxSize:      100 << 20,
			OnOversize:   "deny",
			OnError:      "deny",
			Exclude:      []string{},
			WhileWritten: "rescan",
			Mode:         "enforce",

			AllowSHA256:     []string{},
			AllowSignatures: []string{},
			ExcludeUIDs:     []int64{},
			ExcludeExe:      []string{},
		},
		Cache: Cache{
			MaxEntries:    100000,
			TTL:           Duration(24 * time.Hour),
			VerifyMaxSize: 1 << 20,
			StateFile:     "auto",
		},
		Actions: Actions{
			OnInfected:        []string{},
			OnInfectedTimeout: Duration(30 * time.Second),
		},
		Log: Log{
			Level:          "info",
			Format:         "text",
			RepeatInterval: Duration(time.Minute),
		},
	}
}

// Load reads the file at path and returns Default overlaid with it, after
// Validate. A file that cannot be read gives the *os.PathError unchanged;
// any other error is one line that starts with path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return Parse(path, data)
}

// Parse is Load for a file already in memory; name stands for its path in
// error messages. On error it returns the zero Config.
func Parse(name string, data []byte) (Config, error) {
	f := &file{name: name, text: string(data)}
	c, err := f.parse()
	if err != nil {
		return Config{}, err
	}
	return c, nil
}

// Encode returns the configuration as TOML, every key present, with sizes
// and durations as strings. For a Config that Parse returned, Parse reads
// the result back to an equal Config.
func (c Config) Encode() string {
	if c.Scan.Exclude == nil {
		c.Scan.Exclude = []string{} // The encoder omits nil slices.
	}
	if c.Actions.OnInfected == nil {
		c.Actions.OnInfected = []string{}
	}
	for _, p := range []*[]string{&c.Scan.AllowSHA256, &c.Scan.AllowSignatures, &c.Scan.ExcludeExe} {
		if *p == nil {
			*p = []string{}
		}
	}
	if c.Scan.ExcludeUIDs == nil {
		c.Scan.ExcludeUIDs = []int64{}
	}
	var b strings.Builder
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		// Config holds only strings, bools, ints and types whose
		// MarshalText cannot fail.
		panic("config: encoding a Config: " + err.Error())
	}
	return b.String()
}

// kind is the TOML type the schema expects for a key.
type kind int

const (
	kindTable kind = iota
	kindString
	kindBool
	kindInt
	kindSize            // string or integer; checked by Size.UnmarshalTOML
	kindDuration        // string; checked by Duration.UnmarshalText
	kindStrings         // array of strings
	kindInts            // array of integers
	kindStringOrStrings // a string, or a non-empty array of strings
)

// schema lists every key a file may contain. TestSchemaMatchesConfig keeps it
// in step with the toml tags of Config.
var schema = map[string]kind{
	"mount":                      kindTable,
	"mount.source":               kindString,
	"mount.target":               kindString,
	"mount.allow_other":          kindBool,
	"mount.read_only":            kindBool,
	"mount.attr_timeout":         kindDuration,
	"mount.max_open_per_user":    kindInt,
	"mount.invalidation":         kindString,
	"mount.watched_attr_timeout": kindDuration,
	"mount.readdirplus":          kindString,
	"mount.passthrough":          kindString,

	"clamd":                kindTable,
	"clamd.address":        kindStringOrStrings,
	"clamd.timeout":        kindDuration,
	"clamd.max_concurrent": kindInt,
	"clamd.check_interval": kindDuration,
	"clamd.database_dir":   kindString,
	"clamd.reload_window":  kindDuration,
	"clamd.transport":      kindString,

	"scan":                  kindTable,
	"scan.max_size":         kindSize,
	"scan.on_oversize":      kindString,
	"scan.on_error":         kindString,
	"scan.exclude":          kindStrings,
	"scan.prewarm":          kindBool,
	"scan.while_written":    kindString,
	"scan.mode":             kindString,
	"scan.allow_sha256":     kindStrings,
	"scan.allow_signatures": kindStrings,
	"scan.exclude_uids":     kindInts,
	"scan.exclude_exe":      kindStrings,

	"cache":                 kindTable,
	"cache.max_entries":     kindInt,
	"cache.ttl":             kindDuration,
	"cache.verify_max_size": kindSize,
	"cache.state_file":      kindString,

	"actions":                     kindTable,
	"actions.quarantine_dir":      kindString,
	"actions.on_infected":         kindStrings,
	"actions.on_infected_timeout": kindDuration,

	"metrics":        kindTable,
	"metrics.listen": kindString,

	"log":                 kindTable,
	"log.level":           kindString,
	"log.format":          kindString,
	"log.repeat_interval": kindDuration,
}

// check returns what is wrong with v as a value of kind k, or "".
func (k kind) check(v any) string {
	switch k {
	case kindTable:
		if _, ok := v.(map[string]any); !ok {
			return "must be a table, got " + describe(v)
		}
	case kindString:
		if _, ok := v.(string); !ok {
			return "must be a string, got " + describe(v)
		}
	case kindBool:
		if _, ok := v.(bool); !ok {
			return "must be true or false, got " + describe(v)
		}
	case kindInt:
		if _, ok := v.(int64); !ok {
			return "must be an integer, got " + describe(v)
		}
	case kindSize:
		switch v.(type) {
		case string, int64:
		default:
			return `must be a size such as "100MiB" or an integer number of bytes, got ` + describe(v)
		}
	case kindDuration:
		if _, ok := v.(string); !ok {
			return `must be a duration such as "60s", got ` + describe(v)
		}
	case kindStrings:
		a, ok := v.([]any)
		if !ok {
			return "must be an array of strings, got " + describe(v)
		}
		for i, e := range a {
			if _, ok := e.(string); !ok {
				return fmt.Sprintf("must be an array of strings, got %s at index %d", describe(e), i)
			}
		}
	case kindInts:
		a, ok := v.([]any)
		if !ok {
			return "must be an array of integers, got " + describe(v)
		}
		for i, e := range a {
			if _, ok := e.(int64); !ok {
				return fmt.Sprintf("must be an array of integers, got %s at index %d", describe(e), i)
			}
		}
	case kindStringOrStrings:
		if _, ok := v.(string); ok {
			return ""
		}
		a, ok := v.([]any)
		if !ok {
			return "must be a string or an array of strings, got " + describe(v)
		}
		if len(a) == 0 {
			return "must be a string or an array of strings, got an empty array"
		}
		for i, e := range a {
			if _, ok := e.(string); !ok {
				return fmt.Sprintf("must be a string or an array of strings, got %s at index %d", describe(e), i)
			}
		}
	}
	return ""
}

// describe names the TOML type of a decoded value, and the value itself
// when it is a scalar.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %t", v)
	case time.Time:
		return "datetime" // may be a local date or time; Format would invent the rest
	case []any:
		return "array"
	case map[string]any:
		return "table"
	case []map[string]any:
		return "array of tables"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// file is one configuration file being parsed.
type file struct {
	name  string
	text  string
	lines map[string]int // see keyLines; made on the first error
}

// parse decodes f in three passes, so that each kind of mistake gets its
// own message rather than the TOML library's:
//
//  1. decode into a generic tree: syntax errors;
//  2. walk the keys against schema: unknown keys, wrong TOML types;
//  3. decode into Config: bad sizes and durations; then Validate.
func (f *file) parse() (Config, error) {
	var tree map[string]any
	md, err := toml.Decode(f.text, &tree)
	if err != nil {
		return Config{}, f.tomlError(err, false)
	}
	for _, k := range md.Keys() {
		want, ok := schema[k.String()]
		if !ok {
			return Config{}, f.errorf(k.String(), "unknown key %q", k.String())
		}
		if msg := want.check(lookup(tree, k)); msg != "" {
			return Config{}, f.errorf(k.String(), "%s: %s", k, msg)
		}
	}

	c := Default()
	md, err = toml.Decode(f.text, &c)
	if err != nil {
		return Config{}, f.tomlError(err, true)
	}
	// The schema walk has rejected every key that Config lacks; this only
	// guards against schema and Config drifting apart.
	if u := md.Undecoded(); len(u) > 0 {
		return Config{}, f.errorf(u[0].String(), "unknown key %q", u[0].String())
	}

	if err := c.Validate(); err != nil {
		key := ""
		var fe *fieldError
		if errors.As(err, &fe) {
			key = fe.key
		}
		return Config{}, f.errorf(key, "%s", err)
	}
	return c, nil
}

// lookup returns the value at key in tree, or nil.
func lookup(tree map[string]any, key toml.Key) any {
	var v any = tree
	for _, k := range key {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// tomlError turns an error from toml.Decode into a one-line error. For a
// value that failed to decode, withKey puts the key in front of the message;
// syntax errors have a LastKey too, but it is only the key before the error.
func (f *file) tomlError(err error, withKey bool) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return f.errorAt(0, strings.TrimPrefix(err.Error(), "toml: "))
	}
	msg := pe.Message
	if withKey && pe.LastKey != "" {
		msg = pe.LastKey + ": " + msg
	}
	return f.errorAt(pe.Position.Line, msg)
}

// errorf returns an error about key (as toml.Key.String gives it), prefixed
// with its position.
func (f *file) errorf(key string, format string, args ...any) error {
	return f.errorAt(f.line(key), fmt.Sprintf(format, args...))
}

// errorAt returns "name:line: msg", or "name: msg" if line is 0, on one line.
func (f *file) errorAt(line int, msg string) error {
	s := f.name + ": " + msg
	if line > 0 {
		s = f.name + ":" + strconv.Itoa(line) + ": " + msg
	}
	return errors.New(oneLine(s))
}

// oneLine replaces control characters, newlines included, with "?". The
// messages quote values with %q; this is for the file name and the TOML
// library's messages.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return '?'
		}
		return r
	}, s)
}

// line returns the line on which key (as toml.Key.String gives it) is
// defined, or 0 if it cannot tell.
func (f *file) line(key string) int {
	if f.lines == nil {
		f.lines = keyLines(f.text)
	}
	return f.lines[key]
}
