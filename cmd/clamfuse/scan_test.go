package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// scanTree makes a tree with clean files, an EICAR file two levels down,
// an empty file, and a symlink to the EICAR file that must not be followed.
func scanTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{
		"a.txt":            []byte("hello\n"),
		"empty":            nil,
		"sub/b.bin":        bytes.Repeat([]byte{0xab}, 3<<20), // several INSTREAM chunks
		"sub/deep/eicar":   clamdtest.EICAR(),
		"sub/deep/z.txt":   []byte("zzz\n"),
		"sub/marker-in.da": append(bytes.Repeat([]byte("x"), 5000), clamdtest.Marker()...),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "sub/deep/eicar"), filepath.Join(dir, "link-to-eicar")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runScan(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"scan"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestScan(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	dir := scanTree(t)
	clean := filepath.Join(dir, "a.txt")
	want := strings.Join([]string{
		dir + "/a.txt: OK",
		dir + "/empty: OK",
		dir + "/sub/b.bin: OK",
		dir + "/sub/deep/eicar: " + clamdtest.EICARSignature + " FOUND",
		dir + "/sub/deep/z.txt: OK",
		dir + "/sub/marker-in.da: " + clamdtest.MarkerSignature + " FOUND",
	}, "\n") + "\n"

	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		inStderr string
	}{
		{"tree, walk order whatever the parallelism", []string{"--jobs", "8", dir}, 1, want, "2 of 6 files infected"},
		{"tree, one job", []string{"--jobs", "1", dir}, 1, want, "2 of 6 files infected"},
		{"tree, transport fildes", []string{"--transport", "fildes", dir}, 1, want, "2 of 6 files infected"},
		{"tree, transport instream", []string{"--transport", "instream", dir}, 1, want, "2 of 6 files infected"},
		{"clean file", []string{clean}, 0, clean + ": OK\n", ""},
		{"same file twice", []string{clean, clean}, 0, clean + ": OK\n" + clean + ": OK\n", ""},
		{"top-level symlink is not followed", []string{filepath.Join(dir, "link-to-eicar"), clean}, 0,
			clean + ": OK\n", "symbolic link not followed"},
		{"missing file is an error, the rest is still scanned", []string{filepath.Join(dir, "nope"), clean}, 2,
			filepath.Join(dir, "nope") + ": ERROR: no such file or directory\n" + clean + ": OK\n",
			"1 of 2 files could not be scanned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runScan(t, append([]string{"--clamd", c.Address()}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if stdout != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, tt.stdout)
			}
			if !strings.Contains(stderr, tt.inStderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.inStderr)
			}
		})
	}
}

// TestScanConfig takes the clamd address and the parallelism from the
// config file, and lets flags override them.
func TestScanConfig(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.toml")
	writeConfig(t, good, fmt.Sprintf("[clamd]\naddress = %q\nmax_concurrent = 2\ntimeout = \"5s\"\n", c.Address()))
	bad := filepath.Join(dir, "bad.toml")
	writeConfig(t, bad, "[clamd]\naddress = \"unix:/nonexistent/clamd.sock\"\n")

	if code, out, errb := runScan(t, "--config", good, f); code != 0 || out != f+": OK\n" {
		t.Errorf("config address: exit %d, stdout %q, stderr %q", code, out, errb)
	}
	if code, out, errb := runScan(t, "--config", bad, "--clamd", c.Address(), f); code != 0 || out != f+": OK\n" {
		t.Errorf("--clamd over config: exit %d, stdout %q, stderr %q", code, out, errb)
	}
}

func writeConfig(t *testing.T, p, text string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestScanClamdDown needs no clamd: every file is an error, exit 2.
func TestScanClamdDown(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errb := runScan(t, "--clamd", "unix:"+filepath.Join(dir, "no.sock"), "--timeout", "2s", f)
	if code != exitUsage {
		t.Errorf("exit code %d, want %d", code, exitUsage)
	}
	if !strings.HasPrefix(out, f+": ERROR: ") || !strings.Contains(out, "clamd unavailable") || strings.Count(out, "\n") != 1 {
		t.Errorf("stdout %q, want one ERROR line saying clamd is unavailable", out)
	}
	if !strings.Contains(errb, "1 of 1 files could not be scanned") {
		t.Errorf("stderr %q", errb)
	}
}

func TestScanUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		inStderr string
	}{
		{"no path", []string{"--clamd", "unix:/x.sock"}, "no PATH given"},
		{"zero jobs", []string{"--jobs", "0", "/"}, "--jobs must be at least 1"},
		{"too many jobs", []string{"--jobs", "1000", "/"}, "clamd.max_concurrent"},
		{"bad timeout", []string{"--timeout", "-1s", "/"}, "--timeout must be greater than 0"},
		{"bad address", []string{"--clamd", "http://x", "/"}, "clamd.address"},
		{"unknown flag", []string{"--nope", "/"}, "flag provided but not defined"},
		{"missing config", []string{"--config", "/nonexistent.toml", "/"}, "nonexistent.toml"},
		{"bad transport", []string{"--transport", "stream", "/"}, "clamd.transport"},
		{"fildes over TCP", []string{"--clamd", "tcp://127.0.0.1:3310", "--transport", "fildes", "/"}, `"fildes" needs unix-socket addresses`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errb := runScan(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if !strings.Contains(errb, tt.inStderr) {
				t.Errorf("stderr %q does not contain %q", errb, tt.inStderr)
			}
		})
	}
	if code, _, errb := runScan(t, "-h"); code != exitOK || !strings.Contains(errb, "Exit status: 0 if every file is clean") {
		t.Errorf("-h: exit %d, stderr %q", code, errb)
	}
}
