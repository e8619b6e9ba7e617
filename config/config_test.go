package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestLoadGood(t *testing.T) {
	withMount := func(src, dst string) Config {
		c := Default()
		c.Mount.Source, c.Mount.Target = src, dst
		return c
	}
	dotted := withMount("/srv/a", "/mnt/a")
	dotted.Clamd.Address = Addresses{"unix:/run/clamd.sock"}
	dotted.Clamd.MaxConcurrent = 1
	dotted.Scan.MaxSize = 1 << 20
	dotted.Scan.Exclude = []string{"*.tmp"}

	tests := []struct {
		file string
		want Config
	}{
		{"good.toml", Config{
			Mount: Mount{Source: "/srv/incoming", Target: "/mnt/incoming", AllowOther: true, ReadOnly: true, AttrTimeout: Duration(2 * time.Second), MaxOpenPerUser: 1000,
				Invalidation: "off", WatchedAttrTimeout: Duration(10 * time.Minute), ReaddirPlus: "off", Passthrough: "off"},
			Clamd: Clamd{Address: Addresses{"tcp://127.0.0.1:3310", "unix:/run/clamav/clamd.ctl"}, Timeout: Duration(90 * time.Second), MaxConcurrent: 8,
				CheckInterval: Duration(5 * time.Second), DatabaseDir: "/var/lib/clamav", ReloadWindow: Duration(2 * time.Minute), Transport: "instream"},
			Scan: Scan{MaxSize: 2 << 30, OnOversize: "allow", OnError: "allow", Exclude: []string{"*.iso", "tmp/*", "[Tt]humbs.db"}, Prewarm: true,
				WhileWritten: "deny", Mode: "audit",
				AllowSHA256:     []string{"2C26B46B68FFC68FF99B453C1D30413413422D706483BFA0F98A5E886266E7AE"},
				AllowSignatures: []string{"Win.Test.FalsePositive-1"},
				ExcludeUIDs:     []int64{34, 998}, ExcludeExe: []string{"/usr/sbin/backup-agent"}},
			Cache: Cache{MaxEntries: 5000, TTL: Duration(90 * time.Minute), VerifyMaxSize: 64 << 10,
				StateFile: "/var/lib/clamfuse/incoming.state"},
			Actions: Actions{QuarantineDir: "/var/lib/clamfuse/quarantine",
				OnInfected:        []string{"/usr/local/bin/notify-admin", "--severity", "high"},
				OnInfectedTimeout: Duration(10 * time.Second)},
			Metrics: Metrics{Listen: "127.0.0.1:9323"},
			Log:     Log{Level: "debug", Format: "json", RepeatInterval: Duration(5 * time.Minute)},
		}},
		{"minimal.toml", withMount("/srv/incoming", "/srv/incoming")},
		{"empty.toml", Default()},
		{"dotted.toml", dotted},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := Load(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Load:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestLoadBad pins the exact message for each class of mistake.
func TestLoadBad(t *testing.T) {
	tests := []struct {
		file    string
		wantErr string
	}{
		{"bad_unknown_key.toml", `testdata/bad_unknown_key.toml:7: unknown key "scan.max_sizes"`},
		{"bad_size.toml", `testdata/bad_size.toml:3: scan.max_size: invalid size "10 MeB" (use bytes or KiB, MiB, GiB, TiB)`},
		{"bad_negative_size.toml", `testdata/bad_negative_size.toml:2: scan.max_size: must be at least 1, got -1`},
		{"bad_duration.toml", `testdata/bad_duration.toml:3: clamd.timeout: invalid duration "5 minutes" (use a number and a unit: "60s", "5m", "1h30m")`},
		{"bad_timeout.toml", `testdata/bad_timeout.toml:2: clamd.timeout: must be at most 1h, got 2h`},
		{"bad_choice.toml", `testdata/bad_choice.toml:4: scan.on_error: must be "deny" or "allow", got "maybe"`},
		{"bad_range.toml", `testdata/bad_range.toml:3: cache.max_entries: must be at least 1, got 0`},
		{"bad_max_open.toml", `testdata/bad_max_open.toml:3: mount.max_open_per_user: must be 0 (derived from the descriptor limit) or more, got -5`},
		{"bad_type.toml", `testdata/bad_type.toml:3: mount.allow_other: must be true or false, got string "yes"`},
		{"bad_table_type.toml", `testdata/bad_table_type.toml:1: log: must be a table, got string "debug"`},
		{"bad_case.toml", `testdata/bad_case.toml:1: unknown key "Mount"`},
		{"bad_address.toml", `testdata/bad_address.toml:2: clamd.address: clamd address "localhost:3310": want /path, unix:/path or tcp://host:port`},
		{"bad_glob.toml", `testdata/bad_glob.toml:2: scan.exclude: invalid pattern "[a-": syntax error in pattern`},
		{"bad_syntax.toml", `testdata/bad_syntax.toml:2: strings cannot contain newlines`},
		{"bad_sha256.toml", `testdata/bad_sha256.toml:3: scan.allow_sha256: want 64 hexadecimal digits (sha256sum's output), got "d41d8cd98f00b204e9800998ecf8427e"`},
		{"bad_uids.toml", `testdata/bad_uids.toml:2: scan.exclude_uids: must be an array of integers, got string "backup" at index 1`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", tt.file))
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Load error:\n got %v\nwant %s", err, tt.wantErr)
			}
		})
	}
}

// TestFixturesCovered makes sure every fixture is in one of the tables above,
// so that a new bad_*.toml cannot go untested.
func TestFixturesCovered(t *testing.T) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("config_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !strings.Contains(string(src), `{"`+filepath.Base(f)+`", `) {
			t.Errorf("%s is not in TestLoadGood or TestLoadBad", f)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	name := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(name)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(%q) = %v, want ErrNotExist", name, err)
	}
	if want := "open " + name + ": no such file or directory"; err.Error() != want {
		t.Errorf("Load error:\n got %v\nwant %s", err, want)
	}
}

// TestParseErrors covers positions in layouts the fixtures do not.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"dotted key", "x = 1\nscan.max_sizes = 1\n",
			`c.toml:1: unknown key "x"`},
		{"unknown table", "\n[scan.sub]\n",
			`c.toml:2: unknown key "scan.sub"`},
		{"unknown top-level key last", "[scan]\nmax_size = 1\n[other]\n",
			`c.toml:3: unknown key "other"`},
		{"inline table", "\nscan = { on_error = \"deny\", max_size = \"1 XB\" }\n",
			`c.toml:2: scan.max_size: invalid size "1 XB" (use bytes or KiB, MiB, GiB, TiB)`},
		{"inline table unknown key", "\n\nscan = { max_sizes = 1 }\n",
			`c.toml:3: unknown key "scan.max_sizes"`},
		// The library falls back to a case-insensitive match; we do not.
		{"case variant after", "[mount]\nsource = \"/a\"\nSource = \"/b\"\n",
			`c.toml:3: unknown key "mount.Source"`},
		{"case variant before", "[mount]\nSOURCE = \"/b\"\nsource = \"/a\"\n",
			`c.toml:2: unknown key "mount.SOURCE"`},
		{"array of tables", "[[scan]]\nmax_size = 1\n",
			`c.toml:1: scan: must be a table, got array of tables`},
		{"size float", "[scan]\nmax_size = 1.5\n",
			`c.toml:2: scan.max_size: must be a size such as "100MiB" or an integer number of bytes, got float 1.5`},
		{"size fraction", "[scan]\nmax_size = \"1.5MiB\"\n",
			`c.toml:2: scan.max_size: invalid size "1.5MiB" (use bytes or KiB, MiB, GiB, TiB)`},
		{"size overflow", "[scan]\nmax_size = \"8388608TiB\"\n",
			`c.toml:2: scan.max_size: invalid size "8388608TiB" (too large)`},
		{"duration integer", "[clamd]\ntimeout = 60\n",
			`c.toml:2: clamd.timeout: must be a duration such as "60s", got integer 60`},
		{"int as string", "[clamd]\nmax_concurrent = \"4\"\n",
			`c.toml:2: clamd.max_concurrent: must be an integer, got string "4"`},
		{"exclude element", "[scan]\nexclude = [\n  \"a\",\n  3,\n]\n",
			`c.toml:2: scan.exclude: must be an array of strings, got integer 3 at index 1`},
		{"address integer", "[clamd]\naddress = 3310\n",
			`c.toml:2: clamd.address: must be a string or an array of strings, got integer 3310`},
		{"address empty array", "[clamd]\naddress = []\n",
			`c.toml:2: clamd.address: must be a string or an array of strings, got an empty array`},
		{"address array element", "[clamd]\naddress = [\"/a.sock\", 1]\n",
			`c.toml:2: clamd.address: must be a string or an array of strings, got integer 1 at index 1`},
		{"address array bad", "[clamd]\naddress = [\"/a.sock\", \"b.sock\"]\n",
			`c.toml:2: clamd.address: clamd address "b.sock": want /path, unix:/path or tcp://host:port`},
		{"on_infected string", "[actions]\non_infected = \"/bin/true\"\n",
			`c.toml:2: actions.on_infected: must be an array of strings, got string "/bin/true"`},
		{"exclude string", "[scan]\nexclude = \"*.iso\"\n",
			`c.toml:2: scan.exclude: must be an array of strings, got string "*.iso"`},
		{"datetime", "[mount]\nsource = 1979-05-27T07:32:00Z\n",
			`c.toml:2: mount.source: must be a string, got datetime`},
		{"absolute glob", "[scan]\nexclude = [\"/tmp/*\"]\n",
			`c.toml:2: scan.exclude: pattern "/tmp/*" must be relative to the mount root`},
		{"log level", "[log]\nlevel = \"verbose\"\n",
			`c.toml:2: log.level: must be one of "debug", "info", "warn" or "error", got "verbose"`},
		{"after multi-line string", "[log]\nlevel = \"\"\"\ninfo\"\"\"\nformat = 'yaml'\n",
			`c.toml:4: log.format: must be "text" or "json", got "yaml"`},
		{"multi-line string value", "[log]\n\nlevel = \"\"\"\n\ninfo\"\"\"\n",
			`c.toml:3: log.level: must be one of "debug", "info", "warn" or "error", got "\ninfo"`},
		{"duplicate key", "[log]\nlevel = \"info\"\nlevel = \"warn\"\n",
			`c.toml:3: Key 'log.level' has already been defined.`},
		{"unterminated", "[log]\nlevel = \"info\"\nformat = \n",
			`c.toml:3: expected value but found '\n' instead`},
		// %q keeps a newline in a value from breaking the message.
		{"newline in value", "[log]\nformat = \"te\\nxt\"\n",
			`c.toml:2: log.format: must be "text" or "json", got "te\nxt"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tt.in))
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Parse error:\n got %v\nwant %s", err, tt.wantErr)
			}
		})
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	_, err := Parse("a\nb.toml", []byte("[log]\nlevel = \"\"\"\nx\n\"\"\"\n"))
	if err == nil || strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("Parse error = %q, want one line", err)
	}
	if want := "a?b.toml:"; err != nil && !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Parse error = %q, want prefix %q", err, want)
	}
}

// TestSchemaMatchesConfig keeps schema in step with the toml tags of Config.
func TestSchemaMatchesConfig(t *testing.T) {
	kinds := map[reflect.Type]kind{
		reflect.TypeFor[string]():    kindString,
		reflect.TypeFor[bool]():      kindBool,
		reflect.TypeFor[int]():       kindInt,
		reflect.TypeFor[Size]():      kindSize,
		reflect.TypeFor[Duration]():  kindDuration,
		reflect.TypeFor[[]string]():  kindStrings,
		reflect.TypeFor[[]int64]():   kindInts,
		reflect.TypeFor[Addresses](): kindStringOrStrings,
	}
	fromTags := map[string]kind{}
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			key := prefix + f.Tag.Get("toml")
			if f.Type.Kind() == reflect.Struct {
				fromTags[key] = kindTable
				walk(key+".", f.Type)
				continue
			}
			k, ok := kinds[f.Type]
			if !ok {
				t.Fatalf("%s: no kind for %s", key, f.Type)
			}
			fromTags[key] = k
		}
	}
	walk("", reflect.TypeFor[Config]())
	if !reflect.DeepEqual(schema, fromTags) {
		t.Errorf("schema = %v\nConfig tags give %v", schema, fromTags)
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "1", want: 1},
		{in: "1B", want: 1},
		{in: "1KiB", want: 1024},
		{in: "100MiB", want: 100 << 20},
		{in: "100 MiB", want: 100 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "3TiB", want: 3 << 40},
		{in: "007KiB", want: 7 << 10},
		{in: "1048576", want: 1 << 20},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "9223372036854775807", want: 1<<63 - 1},
		{in: "", wantErr: `invalid size "" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "MiB", wantErr: `invalid size "MiB" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "1.5MiB", wantErr: `invalid size "1.5MiB" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "10 MeB", wantErr: `invalid size "10 MeB" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "1MB", wantErr: `invalid size "1MB" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "1mib", wantErr: `invalid size "1mib" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "-1", wantErr: `invalid size "-1" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: " 1", wantErr: `invalid size " 1" (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "1 ", wantErr: `invalid size "1 " (use bytes or KiB, MiB, GiB, TiB)`},
		{in: "8388608TiB", wantErr: `invalid size "8388608TiB" (too large)`},
		{in: "9223372036854775808", wantErr: `invalid size "9223372036854775808" (too large)`},
	}
	for _, tt := range tests {
		var got Size
		err := got.UnmarshalText([]byte(tt.in))
		switch {
		case tt.wantErr != "":
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("UnmarshalText(%q) error = %v, want %s", tt.in, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("UnmarshalText(%q): %v", tt.in, err)
		case got != tt.want:
			t.Errorf("UnmarshalText(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestSizeFromTOMLInteger(t *testing.T) {
	c, err := Parse("c.toml", []byte("[scan]\nmax_size = 1048576\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Scan.MaxSize != 1<<20 {
		t.Errorf("max_size = %d, want %d", c.Scan.MaxSize, 1<<20)
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1000, "1000B"},
		{1024, "1KiB"},
		{1536, "1536B"},
		{100 << 20, "100MiB"},
		{1 << 30, "1GiB"},
		{1024 << 30, "1TiB"},
		{5 << 40, "5TiB"},
		{-2048, "-2KiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		var back Size
		if err := back.UnmarshalText([]byte(tt.in.String())); err != nil || back != tt.in {
			t.Errorf("round trip of %d: got %d, %v", int64(tt.in), back, err)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in         string
		want       time.Duration
		wantString string
	}{
		{"60s", time.Minute, "1m"},
		{"90s", 90 * time.Second, "1m30s"},
		{"24h", 24 * time.Hour, "24h"},
		{"1h30m", 90 * time.Minute, "1h30m"},
		{"1h0m5s", time.Hour + 5*time.Second, "1h0m5s"},
		{"10m10s", 10*time.Minute + 10*time.Second, "10m10s"},
		{"1h10m", time.Hour + 10*time.Minute, "1h10m"},
		{"500ms", 500 * time.Millisecond, "500ms"},
		{"0", 0, "0s"},
		{"-1m", -time.Minute, "-1m"},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil {
			t.Errorf("UnmarshalText(%q): %v", tt.in, err)
			continue
		}
		if time.Duration(d) != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, time.Duration(d), tt.want)
		}
		if got := d.String(); got != tt.wantString {
			t.Errorf("Duration(%v).String() = %q, want %q", time.Duration(d), got, tt.wantString)
		}
		var back Duration
		if err := back.UnmarshalText([]byte(d.String())); err != nil || back != d {
			t.Errorf("round trip of %v: got %v, %v", time.Duration(d), time.Duration(back), err)
		}
	}
	var d Duration
	want := `invalid duration "60" (use a number and a unit: "60s", "5m", "1h30m")`
	if err := d.UnmarshalText([]byte("60")); err == nil || err.Error() != want {
		t.Errorf("UnmarshalText(\"60\") error = %v, want %s", err, want)
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
	a, b := Default(), Default()
	a.Scan.Exclude = append(a.Scan.Exclude, "x")
	if len(b.Scan.Exclude) != 0 {
		t.Error("Default shares its Exclude slice between calls")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string // "" for valid
	}{
		{"empty mount is fine", func(c *Config) { c.Mount.Source, c.Mount.Target = "", "" }, ""},
		{"invalidation off", func(c *Config) { c.Mount.Invalidation = "off" }, ""},
		{"passthrough off", func(c *Config) { c.Mount.Passthrough = "off" }, ""},
		{"passthrough unknown", func(c *Config) { c.Mount.Passthrough = "on" },
			`mount.passthrough: must be "auto" or "off", got "on"`},
		{"invalidation unknown", func(c *Config) { c.Mount.Invalidation = "on" },
			`mount.invalidation: must be "auto" or "off", got "on"`},
		{"watched_attr_timeout 0", func(c *Config) { c.Mount.WatchedAttrTimeout = 0 }, ""},
		{"readdirplus on", func(c *Config) { c.Mount.ReaddirPlus = "on" }, ""},
		{"readdirplus bad", func(c *Config) { c.Mount.ReaddirPlus = "always" },
			`mount.readdirplus: must be one of "auto", "on" or "off", got "always"`},
		{"watched_attr_timeout 24h", func(c *Config) { c.Mount.WatchedAttrTimeout = Duration(24 * time.Hour) }, ""},
		{"watched_attr_timeout over 24h", func(c *Config) { c.Mount.WatchedAttrTimeout = Duration(25 * time.Hour) },
			`mount.watched_attr_timeout: must be between 0s and 24h, got 25h`},
		{"tcp address", func(c *Config) { c.Clamd.Address = Addresses{"tcp://[::1]:3310"} }, ""},
		{"bad address", func(c *Config) { c.Clamd.Address = Addresses{"clamd.sock"} },
			`clamd.address: clamd address "clamd.sock": want /path, unix:/path or tcp://host:port`},
		{"two addresses", func(c *Config) { c.Clamd.Address = Addresses{"/a.sock", "tcp://h:3310"} }, ""},
		{"second address bad", func(c *Config) { c.Clamd.Address = Addresses{"/a.sock", "h:3310"} },
			`clamd.address: clamd address "h:3310": want /path, unix:/path or tcp://host:port`},
		{"no address", func(c *Config) { c.Clamd.Address = nil }, `clamd.address: must be set`},
		{"same address twice", func(c *Config) { c.Clamd.Address = Addresses{"/a.sock", "unix:/a.sock"} },
			`clamd.address: "unix:/a.sock" is listed twice`},
		{"max_open_per_user derived", func(c *Config) { c.Mount.MaxOpenPerUser = 0 }, ""},
		{"max_open_per_user 1", func(c *Config) { c.Mount.MaxOpenPerUser = 1 }, ""},
		{"max_open_per_user negative", func(c *Config) { c.Mount.MaxOpenPerUser = -1 },
			`mount.max_open_per_user: must be 0 (derived from the descriptor limit) or more, got -1`},
		{"check_interval 0", func(c *Config) { c.Clamd.CheckInterval = 0 },
			`clamd.check_interval: must be between 100ms and 1h, got 0s`},
		{"check_interval 100ms", func(c *Config) { c.Clamd.CheckInterval = Duration(100 * time.Millisecond) }, ""},
		{"relative database_dir", func(c *Config) { c.Clamd.DatabaseDir = "db" },
			`clamd.database_dir: must be an absolute path, got "db"`},
		{"reload_window 0", func(c *Config) { c.Clamd.ReloadWindow = 0 }, ""},
		{"reload_window negative", func(c *Config) { c.Clamd.ReloadWindow = Duration(-time.Second) },
			`clamd.reload_window: must be between 0s and 1h, got -1s`},
		{"transport fildes, unix sockets", func(c *Config) {
			c.Clamd.Transport = "fildes"
			c.Clamd.Address = Addresses{"/a.sock", "unix:/b.sock"}
		}, ""},
		{"transport fildes, tcp", func(c *Config) {
			c.Clamd.Transport = "fildes"
			c.Clamd.Address = Addresses{"/a.sock", "tcp://h:3310"}
		}, `clamd.transport: "fildes" needs unix-socket addresses (clamd on this machine), but "tcp://h:3310" is not one; use "auto" or "instream"`},
		{"transport auto, tcp", func(c *Config) { c.Clamd.Transport = "auto"; c.Clamd.Address = Addresses{"tcp://h:3310"} }, ""},
		{"transport unknown", func(c *Config) { c.Clamd.Transport = "FILDES" },
			`clamd.transport: must be one of "auto", "instream" or "fildes", got "FILDES"`},
		{"relative quarantine_dir", func(c *Config) { c.Actions.QuarantineDir = "q" },
			`actions.quarantine_dir: must be an absolute path, got "q"`},
		{"on_infected relative", func(c *Config) { c.Actions.OnInfected = []string{"notify", "x"} },
			`actions.on_infected: the command must be an absolute path (no shell, no PATH lookup), got "notify"`},
		{"on_infected absolute", func(c *Config) { c.Actions.OnInfected = []string{"/bin/true"} }, ""},
		{"nil on_infected", func(c *Config) { c.Actions.OnInfected = nil }, ""},
		{"on_infected_timeout 0", func(c *Config) { c.Actions.OnInfectedTimeout = 0 },
			`actions.on_infected_timeout: must be greater than 0 and at most 1h, got 0s`},
		{"metrics listen", func(c *Config) { c.Metrics.Listen = "127.0.0.1:9323" }, ""},
		{"metrics listen all", func(c *Config) { c.Metrics.Listen = ":9323" }, ""},
		{"metrics listen ipv6", func(c *Config) { c.Metrics.Listen = "[::1]:9323" }, ""},
		{"metrics listen no port", func(c *Config) { c.Metrics.Listen = "127.0.0.1" },
			`metrics.listen: want host:port such as "127.0.0.1:9323", got "127.0.0.1"`},
		{"metrics listen bad port", func(c *Config) { c.Metrics.Listen = "localhost:http" },
			`metrics.listen: invalid port in "localhost:http"`},
		{"zero timeout", func(c *Config) { c.Clamd.Timeout = 0 },
			`clamd.timeout: must be greater than 0, got 0s`},
		{"timeout 1h", func(c *Config) { c.Clamd.Timeout = Duration(time.Hour) }, ""},
		{"timeout over 1h", func(c *Config) { c.Clamd.Timeout = Duration(time.Hour + time.Second) },
			`clamd.timeout: must be at most 1h, got 1h0m1s`},
		{"max_concurrent 0", func(c *Config) { c.Clamd.MaxConcurrent = 0 },
			`clamd.max_concurrent: must be between 1 and 256, got 0`},
		{"max_concurrent 256", func(c *Config) { c.Clamd.MaxConcurrent = 256 }, ""},
		{"max_concurrent 257", func(c *Config) { c.Clamd.MaxConcurrent = 257 },
			`clamd.max_concurrent: must be between 1 and 256, got 257`},
		{"max_size 0", func(c *Config) { c.Scan.MaxSize = 0 },
			`scan.max_size: must be at least 1, got 0`},
		{"max_size 1", func(c *Config) { c.Scan.MaxSize = 1 }, ""},
		{"on_oversize", func(c *Config) { c.Scan.OnOversize = "Deny" },
			`scan.on_oversize: must be "deny" or "allow", got "Deny"`},
		{"on_error", func(c *Config) { c.Scan.OnError = "maybe" },
			`scan.on_error: must be "deny" or "allow", got "maybe"`},
		{"nil exclude", func(c *Config) { c.Scan.Exclude = nil }, ""},
		{"empty glob", func(c *Config) { c.Scan.Exclude = []string{"a", ""} },
			`scan.exclude: empty pattern`},
		{"bad glob", func(c *Config) { c.Scan.Exclude = []string{`a\`} },
			`scan.exclude: invalid pattern "a\\": syntax error in pattern`},
		{"max_entries", func(c *Config) { c.Cache.MaxEntries = -1 },
			`cache.max_entries: must be at least 1, got -1`},
		{"ttl", func(c *Config) { c.Cache.TTL = 0 },
			`cache.ttl: must be greater than 0, got 0s`},
		{"verify_max_size 0", func(c *Config) { c.Cache.VerifyMaxSize = 0 }, ""},
		{"verify_max_size negative", func(c *Config) { c.Cache.VerifyMaxSize = -1 },
			`cache.verify_max_size: must be at least 0, got -1`},
		{"while_written deny", func(c *Config) { c.Scan.WhileWritten = "deny" }, ""},
		{"while_written", func(c *Config) { c.Scan.WhileWritten = "wait" },
			`scan.while_written: must be "rescan" or "deny", got "wait"`},
		{"log level", func(c *Config) { c.Log.Level = "" },
			`log.level: must be one of "debug", "info", "warn" or "error", got ""`},
		{"log format", func(c *Config) { c.Log.Format = "xml" },
			`log.format: must be "text" or "json", got "xml"`},
		{"repeat_interval 0", func(c *Config) { c.Log.RepeatInterval = 0 }, ""},
		{"repeat_interval negative", func(c *Config) { c.Log.RepeatInterval = Duration(-time.Second) },
			`log.repeat_interval: must be between 0s and 1h, got -1s`},
		{"mode audit", func(c *Config) { c.Scan.Mode = "audit" }, ""},
		{"mode", func(c *Config) { c.Scan.Mode = "warn" },
			`scan.mode: must be "enforce" or "audit", got "warn"`},
		{"allow_sha256", func(c *Config) {
			c.Scan.AllowSHA256 = []string{"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
		}, ""},
		{"allow_sha256 short", func(c *Config) { c.Scan.AllowSHA256 = []string{"e3b0c442"} },
			`scan.allow_sha256: want 64 hexadecimal digits (sha256sum's output), got "e3b0c442"`},
		{"allow_sha256 not hex", func(c *Config) {
			c.Scan.AllowSHA256 = []string{"g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
		}, `scan.allow_sha256: want 64 hexadecimal digits (sha256sum's output), got "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"`},
		{"allow_signatures", func(c *Config) { c.Scan.AllowSignatures = []string{"Eicar-Signature"} }, ""},
		{"allow_signatures empty", func(c *Config) { c.Scan.AllowSignatures = []string{""} },
			`scan.allow_signatures: want a signature name as clamd reports it, got ""`},
		{"allow_signatures space", func(c *Config) { c.Scan.AllowSignatures = []string{"Eicar-Signature "} },
			`scan.allow_signatures: want a signature name as clamd reports it, got "Eicar-Signature "`},
		{"exclude_uids", func(c *Config) { c.Scan.ExcludeUIDs = []int64{0, 4294967294} }, ""},
		{"exclude_uids -1", func(c *Config) { c.Scan.ExcludeUIDs = []int64{4294967295} },
			`scan.exclude_uids: must be between 0 and 4294967294, got 4294967295`},
		{"exclude_uids negative", func(c *Config) { c.Scan.ExcludeUIDs = []int64{-2} },
			`scan.exclude_uids: must be between 0 and 4294967294, got -2`},
		{"exclude_exe", func(c *Config) { c.Scan.ExcludeExe = []string{"/usr/bin/rsync"} }, ""},
		{"exclude_exe relative", func(c *Config) { c.Scan.ExcludeExe = []string{"rsync"} },
			`scan.exclude_exe: want the absolute path of a program, got "rsync"`},
		{"exclude_exe unclean", func(c *Config) { c.Scan.ExcludeExe = []string{"/usr/bin/../bin/rsync"} },
			`scan.exclude_exe: want a clean path (no "..", ".", "//" or trailing "/"), got "/usr/bin/../bin/rsync"`},
		{"state_file none", func(c *Config) { c.Cache.StateFile = "" }, ""},
		{"state_file path", func(c *Config) { c.Cache.StateFile = "/var/lib/clamfuse/x.state" }, ""},
		{"state_file relative", func(c *Config) { c.Cache.StateFile = "x.state" },
			`cache.state_file: want "auto", an absolute path or "" (none), got "x.state"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.change(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
			} else if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Validate error:\n got %v\nwant %s", err, tt.wantErr)
			}
		})
	}
}

func TestValidateMount(t *testing.T) {
	tests := []struct {
		source, target string
		wantErr        string
		quarantine     string
		state          string // cache.state_file when not ""
	}{
		{"/srv/in", "/mnt/in", "", "", ""},
		{"/srv/in", "/srv/in", "", "", ""},
		{"/srv/in/", "/srv/in", "", "", ""},
		{"/srv/in", "/srv", "", "", ""},
		{"/srv/in", "/srv/inbox", "", "", ""},
		{"/srv/in", "/srv/..in", "", "", ""},
		{"", "/mnt/in", `mount.source: must be set`, "", ""},
		{"/srv/in", "", `mount.target: must be set`, "", ""},
		{"srv/in", "/mnt/in", `mount.source: must be an absolute path, got "srv/in"`, "", ""},
		{"/srv/in", "./in", `mount.target: must be an absolute path, got "./in"`, "", ""},
		{"/srv/in\x00", "/mnt/in", `mount.source: must not contain a NUL byte, got "/srv/in\x00"`, "", ""},
		{"/srv/in", "/srv/in/mnt", `mount.target: must not be inside mount.source ("/srv/in"), got "/srv/in/mnt"`, "", ""},
		{"/", "/mnt", `mount.target: must not be inside mount.source ("/"), got "/mnt"`, "", ""},
		{"/srv/in", "/srv/x/../in/mnt", `mount.target: must not be inside mount.source ("/srv/in"), got "/srv/x/../in/mnt"`, "", ""},
		{"/srv/in", "/mnt/in", "", "/var/q", ""},
		{"/srv/in", "/mnt/in", "", "/srv/inq", ""},
		{"/srv/in", "/mnt/in", `actions.quarantine_dir: must not be inside mount.source ("/srv/in"), got "/srv/in/.q"`, "/srv/in/.q", ""},
		{"/srv/in", "/mnt/in", `actions.quarantine_dir: must not be inside mount.source ("/srv/in"), got "/srv/in"`, "/srv/in", ""},
		{"/srv/in", "/mnt/in", `actions.quarantine_dir: must not be inside mount.target ("/mnt/in"), got "/mnt/in/q"`, "/mnt/in/q", ""},
		{"/srv/in", "/mnt/in", "", "", "/var/lib/in.state"},
		{"/srv/in", "/mnt/in", `cache.state_file: must not be inside mount.target ("/mnt/in"), got "/mnt/in/.state"`, "", "/mnt/in/.state"},
		{"/srv/in", "/srv/in", `cache.state_file: must not be inside mount.source ("/srv/in"), got "/srv/in/x.state"`, "", "/srv/in/x.state"},
	}
	for _, tt := range tests {
		c := Default()
		c.Mount.Source, c.Mount.Target = tt.source, tt.target
		c.Actions.QuarantineDir = tt.quarantine
		if tt.state != "" {
			c.Cache.StateFile = tt.state
		}
		err := c.ValidateMount()
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateMount(%q, %q): %v", tt.source, tt.target, err)
			}
		} else if err == nil || err.Error() != tt.wantErr {
			t.Errorf("ValidateMount(%q, %q) error:\n got %v\nwant %s", tt.source, tt.target, err, tt.wantErr)
		}
	}
}

// TestParseAddress checks the delegation to clamav.ParseAddress, which owns
// the syntax and its detailed tests: results pass through, and every error
// names the value.
func TestParseAddress(t *testing.T) {
	long := "/" + strings.Repeat("s", 107)
	tests := []struct {
		in            string
		network, addr string
		wantErr       bool
	}{
		{in: "/run/clamav/clamd.ctl", network: "unix", addr: "/run/clamav/clamd.ctl"},
		{in: "unix:/run/clamav/clamd.ctl", network: "unix", addr: "/run/clamav/clamd.ctl"},
		{in: long[:107], network: "unix", addr: long[:107]},
		{in: "tcp://127.0.0.1:3310", network: "tcp", addr: "127.0.0.1:3310"},
		{in: "tcp://[::1]:3310", network: "tcp", addr: "[::1]:3310"},
		{in: "clamd.sock", wantErr: true},
		{in: "localhost:3310", wantErr: true},
		{in: "udp://h:1", wantErr: true},
		{in: "unix:clamd.sock", wantErr: true},
		{in: long, wantErr: true},
		{in: "tcp://localhost", wantErr: true},
		{in: "tcp://h:0", wantErr: true},
		{in: "tcp://h:65536", wantErr: true},
	}
	for _, tt := range tests {
		network, addr, err := ParseAddress(tt.in)
		if tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) || strings.Contains(err.Error(), "\n") {
				t.Errorf("ParseAddress(%q) error = %v; want one line naming the value", tt.in, err)
			}
			continue
		}
		if err != nil || network != tt.network || addr != tt.addr {
			t.Errorf("ParseAddress(%q) = %q, %q, %v; want %q, %q", tt.in, network, addr, err, tt.network, tt.addr)
		}
	}
}

func TestIsExcluded(t *testing.T) {
	c := Default()
	c.Scan.Exclude = []string{"*.iso", "tmp/*", "[Tt]humbs.db", "a/*/c"}
	tests := []struct {
		rel  string
		want bool
	}{
		{"x.iso", true},
		{"deep/down/x.iso", true},
		{"x.iso.txt", false},
		{"tmp/x", true},
		{"tmp/a/x", false}, // "*" does not cross "/"
		{"a/tmp/x", false}, // a pattern with "/" matches the whole path only
		{"thumbs.db", true},
		{"pics/Thumbs.db", true},
		{"a/b/c", true},
		{"x/a/b/c", false},
		{"tmp", false},
		{"", false},
		{".", false},
	}
	for _, tt := range tests {
		if got := c.IsExcluded(tt.rel); got != tt.want {
			t.Errorf("IsExcluded(%q) = %v, want %v", tt.rel, got, tt.want)
		}
	}
	if Default().IsExcluded("x.iso") {
		t.Error("Default excludes x.iso")
	}
	c.Scan.Exclude = []string{"*"}
	if c.IsExcluded("") {
		t.Error(`"*" excludes the root`)
	}
}

// TestEncode pins what `clamfuse check-config` prints for good.toml, and
// that Parse reads it back to the same Config.
func TestEncode(t *testing.T) {
	c, err := Load("testdata/good.toml")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Encode()
	const golden = "testdata/good.toml.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("Encode:\n%s\nwant (%s; go test -update to rewrite):\n%s", got, golden, want)
	}
}

// TestEncodeSingleAddress: a single clamd address stays a string, so
// files in the original form read as before and print the same.
func TestEncodeSingleAddress(t *testing.T) {
	c, err := Parse("c.toml", []byte("[clamd]\naddress = \"unix:/run/x.ctl\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Clamd.Address, Addresses{"unix:/run/x.ctl"}) {
		t.Errorf("Address = %#v", c.Clamd.Address)
	}
	if out := c.Encode(); !strings.Contains(out, "\naddress = \"unix:/run/x.ctl\"\n") {
		t.Errorf("Encode:\n%s\nwant address as a string", out)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	odd := Default()
	odd.Mount.Source = "/srv/\"quoted\"\\ and\ttab é"
	odd.Scan.MaxSize = 1000
	odd.Scan.Exclude = nil
	odd.Clamd.Timeout = Duration(1500 * time.Millisecond)
	odd.Clamd.Address = Addresses{`/run/a"b"\cé.sock`, "tcp://[::1]:3310"}
	odd.Actions.OnInfected = nil
	for _, c := range []Config{Default(), odd} {
		back, err := Parse("encoded", []byte(c.Encode()))
		if err != nil {
			t.Fatalf("Parse(Encode()): %v\n%s", err, c.Encode())
		}
		if c.Scan.Exclude == nil {
			c.Scan.Exclude = []string{}
		}
		if c.Actions.OnInfected == nil {
			c.Actions.OnInfected = []string{}
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("Parse(Encode()):\n got %+v\nwant %+v", back, c)
		}
	}
}
