package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// addSeeds adds every fixture in testdata and a few layouts they lack.
func addSeeds(f *testing.F) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"scan = { max_size = 1, exclude = [\"*\"] }",
		"[[scan]]\nmax_size = 1\n",
		"[mount]\nSource = \"/a\"\nsource = \"/b\"\n",
		"[log]\nlevel = '''\ninfo'''\n",
		"\"a,b\" = 1\n\"\" = 2\n\"-\" = 3\n",
		"\xef\xbb\xbf[log]\nlevel = \"warn\"\n",
		"[scan]\nexclude = [\"a\", \"[\"]\n",
		"m = \"\"\"\n[t]\nk = \\\"\"\"\n\"\"\"\nl = '''\n[t]\n'''''\n",
		"a = [ # [t]\n  { b = 1, 'c' . \"d\" = 1979-05-27 07:32:00Z },\n]\n",
	} {
		f.Add([]byte(s))
	}
}

// checkResult is what FuzzParse and FuzzLoad require of every input: an error
// is one line that starts with name, and a Config that loads is valid and
// survives Encode and Parse unchanged.
func checkResult(t *testing.T, name string, c Config, err error) {
	t.Helper()
	if err != nil {
		msg := err.Error()
		if strings.ContainsAny(msg, "\r\n") {
			t.Fatalf("error is not one line: %q", msg)
		}
		if !strings.HasPrefix(msg, name+":") {
			t.Fatalf("error does not start with %q: %q", name+":", msg)
		}
		return
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("loaded a Config that does not validate: %v", err)
	}
	text := c.Encode()
	back, err := Parse("encoded", []byte(text))
	if err != nil {
		t.Fatalf("Parse(Encode()): %v\n%s", err, text)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("Parse(Encode()) changed the Config:\n got %+v\nwant %+v", back, c)
	}
}

func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		checkResult(t, "fuzz.toml", c, err)
		checkKeyLines(t, data)
	})
}

// checkKeyLines requires keyLines to find a line for every key in valid
// TOML, so that no error about a key goes without its line.
func checkKeyLines(t *testing.T, data []byte) {
	t.Helper()
	var tree map[string]any
	md, err := toml.Decode(string(data), &tree)
	if err != nil {
		return
	}
	lines := keyLines(string(data))
	n := strings.Count(string(data), "\n") + 1
	for _, k := range md.Keys() {
		if l := lines[k.String()]; l < 1 || l > n {
			t.Fatalf("keyLines gives key %q line %d of %d; all: %v", k.String(), l, n, lines)
		}
	}
}

// FuzzLoad is FuzzParse through a file on disk, as the daemon reads it.
func FuzzLoad(f *testing.F) {
	addSeeds(f)
	name := filepath.Join(f.TempDir(), "clamfuse.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(name)
		checkResult(t, name, c, err)
	})
}
