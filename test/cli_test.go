package test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/mounttest"
)

// cliRun runs the clamfuse binary with args, bounded in time (a mount
// that should have failed but did not would serve forever), and returns
// its exit code and outputs.
func cliRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mounttest.Binary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("clamfuse %q: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Errorf("clamfuse %q did not exit within 30s", args)
	}
	return code, out.String(), errb.String()
}

// wantOneLineError checks that stderr is exactly one line naming the
// fault: every one of want appears in it.
func wantOneLineError(t *testing.T, stderr string, want ...string) {
	t.Helper()
	line := strings.TrimSuffix(stderr, "\n")
	if line == "" || strings.Contains(line, "\n") {
		t.Errorf("stderr is not one line:\n%s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("stderr %q does not name %q", line, w)
		}
	}
}

// wantNothingMounted checks that no mount has any of paths as mountpoint
// or source; it clears one if the binary made it anyway. It fails t when
// the mount table cannot be read.
func wantNothingMounted(t *testing.T, paths ...string) {
	t.Helper()
	mounts := mounttest.Mounts(t)
	for _, p := range paths {
		for _, m := range mounts {
			if m.MountPoint == p || m.Source == p {
				t.Errorf("%s is mounted (%s on %s, %s) after a run that should have mounted nothing", p, m.Source, m.MountPoint, m.FSType)
				_ = unix.Unmount(m.MountPoint, unix.MNT_DETACH)
			}
		}
	}
}

// TestCLIBadInput: every mistake in the command line, the config file or
// the paths ends clamfuse with exit code 2 and one line on stderr naming
// what is wrong, and nothing gets mounted.
func TestCLIBadInput(t *testing.T) {
	dir := t.TempDir()
	src, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "mnt")
	for _, d := range []string{src, mnt, filepath.Join(src, "inner"), filepath.Join(mnt, "inner")} {
		mustDo(t, os.MkdirAll(d, 0o755))
	}
	file := filepath.Join(dir, "plain-file")
	putFile(t, file, []byte("x"))
	conf := func(name, text string) string {
		p := filepath.Join(dir, name)
		putFile(t, p, []byte(text))
		return p
	}
	unknown := conf("unknown.toml", "[scan]\nmax_size = \"1MiB\"\nbogus_key = 1\n")
	badSize := conf("badsize.toml", "[scan]\nmax_size = \"1.5MiB\"\n")
	badDuration := conf("badduration.toml", "[clamd]\ntimeout = \"5 parsecs\"\n")
	missing := filepath.Join(dir, "missing.toml")

	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of the one-line message
	}{
		{"missing config file", []string{"--config", missing, src, mnt}, []string{missing, "no such file"}},
		{"unknown key", []string{"--config", unknown, src, mnt}, []string{unknown + ":3:", "scan.bogus_key", "unknown key"}},
		{"bad size", []string{"--config", badSize, src, mnt}, []string{badSize + ":2:", "scan.max_size", "1.5MiB"}},
		{"bad duration", []string{"--config", badDuration, src, mnt}, []string{badDuration + ":2:", "clamd.timeout", "5 parsecs"}},
		{"source missing", []string{filepath.Join(dir, "nosrc"), mnt}, []string{"source", filepath.Join(dir, "nosrc"), "no such file"}},
		{"source not a directory", []string{file, mnt}, []string{"source", file, "not a directory"}},
		{"mountpoint missing", []string{src, filepath.Join(dir, "nomnt")}, []string{"mountpoint", filepath.Join(dir, "nomnt"), "no such file"}},
		{"mountpoint not a directory", []string{src, file}, []string{"mountpoint", file, "not a directory"}},
		{"source inside mountpoint", []string{filepath.Join(mnt, "inner"), mnt}, []string{filepath.Join(mnt, "inner"), "inside", mnt}},
		{"mountpoint inside source", []string{src, filepath.Join(src, "inner")}, []string{filepath.Join(src, "inner"), "inside", src}},
		{"malformed clamd address", []string{"--clamd", "localhost:3310", src, mnt}, []string{"clamd", "localhost:3310"}},
		{"relative clamd socket", []string{"--clamd", "unix:clamd.sock", src, mnt}, []string{"clamd", "unix:clamd.sock"}},
		{"bad log level", []string{"--log-level", "loud", src, mnt}, []string{"log.level", "loud"}},
		{"one path only", []string{src}, []string{"SOURCE and MOUNTPOINT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cliRun(t, append([]string{"mount"}, tc.args...)...)
			if code != 2 {
				t.Errorf("exit code %d, want 2; stderr:\n%s", code, stderr)
			}
			wantOneLineError(t, stderr, tc.want...)
			wantNothingMounted(t, src, mnt, filepath.Join(src, "inner"), filepath.Join(mnt, "inner"), file)
		})
	}

	// A flag the flag package cannot parse also prints the usage; the
	// last line is still the one-line error.
	t.Run("bad flag value", func(t *testing.T) {
		code, _, stderr := cliRun(t, "mount", "--timeout", "5parsecs", src, mnt)
		if code != 2 {
			t.Errorf("exit code %d, want 2; stderr:\n%s", code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		wantOneLineError(t, lines[len(lines)-1], "timeout", "5parsecs")
		wantNothingMounted(t, src, mnt)
	})

	t.Run("mountpoint already a FUSE mount", func(t *testing.T) {
		first := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", "unix:/nonexistent/clamd.sock"}})
		other := filepath.Join(t.TempDir(), "other")
		mustDo(t, os.Mkdir(other, 0o755))
		code, _, stderr := cliRun(t, "mount", "--clamd", "unix:/nonexistent/clamd.sock", other, first.Target)
		if code != 2 {
			t.Errorf("exit code %d, want 2; stderr:\n%s", code, stderr)
		}
		wantOneLineError(t, stderr, "mountpoint", first.Target, "already")
		wantNothingMounted(t, other)
		if !first.Mounted() {
			t.Fatalf("the first mount is gone")
		}
		select {
		case <-first.Exited():
			t.Fatalf("the first clamfuse exited:\n%s", first.Log.String())
		default:
		}
		putFile(t, first.Backing("still-served"), nil)
		if _, err := os.Stat(first.Path("still-served")); err != nil {
			t.Fatalf("the first mount no longer serves: %v", err)
		}
	})
}

// TestCLIClamdUnreachableAtStart: a clamd that is not there when clamfuse
// starts is worth a WARN line, not a refusal to mount: it may start later.
// Meanwhile unscanned files are denied.
func TestCLIClamdUnreachableAtStart(t *testing.T) {
	sock := "/nonexistent/clamd-for-clamfuse-test.sock"
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", "unix:" + sock, "--timeout", "2s"}})
	m.WaitLogLines(t, logBound, "level=WARN", "clamd not reachable", sock)
	putFile(t, m.Backing("file"), []byte("not empty"))
	wantEACCES(t, m, m.Path("file"))
}

// TestCLICheckConfig: check-config prints the effective configuration
// (the file's values and the defaults for the rest) and exits 0; what it
// prints is itself a valid config with the same meaning.
func TestCLICheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	putFile(t, good, []byte(`# a comment
[clamd]
address = "unix:/run/clamav/other.ctl"
timeout = "2s"

[scan]
max_size = "1MiB"
exclude = ["*.part", "tmp/*"]
`))
	code, stdout, stderr := cliRun(t, "check-config", "--config", good)
	if code != 0 || stderr != "" {
		t.Fatalf("check-config: exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	for _, want := range []string{
		`address = "unix:/run/clamav/other.ctl"`, `timeout = "2s"`, `max_size = "1MiB"`,
		`exclude = ["*.part", "tmp/*"]`,
		// Defaults for what the file leaves out.
		"max_concurrent = 4", `on_oversize = "deny"`, `on_error = "deny"`, "max_entries = 100000",
		`ttl = "24h"`, `level = "info"`, `format = "text"`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, stdout)
		}
	}
	again := filepath.Join(dir, "effective.toml")
	putFile(t, again, []byte(stdout))
	code, stdout2, stderr := cliRun(t, "check-config", "--config", again)
	if code != 0 || stdout2 != stdout {
		t.Errorf("check-config of its own output: exit %d, stderr %q, output changed:\n%s", code, stderr, stdout2)
	}

	bad := filepath.Join(dir, "bad.toml")
	putFile(t, bad, []byte("[cache]\nttl = \"soon\"\n"))
	code, stdout, stderr = cliRun(t, "check-config", "--config", bad)
	if code != 2 || stdout != "" {
		t.Errorf("check-config of a bad file: exit %d, stdout %q; want 2 and nothing", code, stdout)
	}
	wantOneLineError(t, stderr, bad+":2:", "cache.ttl", "soon")
}

// TestCLIVersion: version prints "clamfuse <version> ..." and exits 0.
func TestCLIVersion(t *testing.T) {
	code, stdout, stderr := cliRun(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "clamfuse ") || stderr != "" {
		t.Errorf("version: exit %d, stdout %q, stderr %q; want 0 and \"clamfuse ...\"", code, stdout, stderr)
	}
}
