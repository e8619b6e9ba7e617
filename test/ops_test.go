package test

// End-to-end tests of operating clamfuse (issue #6): fresh signatures
// invalidating verdicts, actions on detection, metrics, several clamd
// backends, and live reload on SIGHUP. Each runs the built binary on a
// real FUSE mount in front of real, private clamd processes.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

const opsBound = 10 * time.Second // for an asynchronous effect to show

// opsRead reads p through the mount, bounded in time.
func opsRead(t *testing.T, m *mounttest.Mount, p string) ([]byte, error) {
	t.Helper()
	var data []byte
	var err error
	m.Within(t, 30*time.Second, "read "+p, func() { data, err = os.ReadFile(p) })
	return data, err
}

func opsWantRead(t *testing.T, m *mounttest.Mount, p string, want []byte) {
	t.Helper()
	got, err := opsRead(t, m, p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %s: %q, %v; want %q", p, got, err, want)
	}
}

func opsWantErrno(t *testing.T, m *mounttest.Mount, p string, want syscall.Errno) {
	t.Helper()
	_, err := opsRead(t, m, p)
	if !errors.Is(err, want) {
		t.Fatalf("read %s: %v; want %v", p, err, want)
	}
}

// opsConfigPath is the config file mounttest wrote for m.
func opsConfigPath(t *testing.T, m *mounttest.Mount) string {
	t.Helper()
	for i, a := range m.Cmd.Args {
		if a == "--config" && i+1 < len(m.Cmd.Args) {
			return m.Cmd.Args[i+1]
		}
	}
	t.Fatal("mount has no --config")
	return ""
}

// opsJSONLines returns the JSON log lines with msg.
func opsJSONLines(m *mounttest.Mount, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range m.Log.Lines(`"msg":"` + msg + `"`) {
		var v map[string]any
		if json.Unmarshal([]byte(l), &v) == nil {
			out = append(out, v)
		}
	}
	return out
}

// TestOpsFreshSignatures: a file read clean (and cached) is denied soon
// after a signature matching it is added to clamd's database and clamd
// reloads: the watcher of database_dir invalidates the cache at once and
// caches nothing during the reload window.
func TestOpsFreshSignatures(t *testing.T) {
	t.Parallel()
	c := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = %q
timeout = "20s"
database_dir = %q
`, c.Address(), c.DBDir)})
	body := []byte(fmt.Sprintf("innocent looking payload %d", time.Now().UnixNano()))
	putFile(t, m.Backing("payload.txt"), body)
	opsWantRead(t, m, m.Path("payload.txt"), body)
	opsWantRead(t, m, m.Path("payload.txt"), body) // cached

	if err := c.AddNDBSignature("Clamfuse.Test.Fresh", hex.EncodeToString(body)); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	for {
		_, err := opsRead(t, m, m.Path("payload.txt"))
		if errors.Is(err, syscall.EACCES) {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if time.Since(began) > 10*time.Second {
			t.Fatalf("still readable 10s after the new signature was loaded\n%s", m.Log.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("denied %v after clamd reloaded", time.Since(began).Round(time.Millisecond))
	m.WaitLogLines(t, opsBound, "clamd database directory changed")
	m.WaitLogLines(t, opsBound, "level=WARN", "path=payload.txt ", "signature=Clamfuse.Test.Fresh.UNOFFICIAL")
}

// TestOpsQuarantine: with the quarantine on another filesystem, an
// infected file is copied there with its record and removed from the
// backing directory; the command runs once, with the CLAMFUSE_*
// variables; the audit line says what was done.
func TestOpsQuarantine(t *testing.T) {
	t.Parallel()
	c := clamdtest.New(t, clamdtest.Options{})
	q := mountTmpfs(t, "size=4m,mode=0700")
	envOut := filepath.Join(t.TempDir(), "env.out")
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = %q
[actions]
quarantine_dir = %q
on_infected = ["/bin/sh", "-c", "env | grep ^CLAMFUSE_ | sort >> %s"]
on_infected_timeout = "5s"
[log]
format = "json"
`, c.Address(), q, envOut)})
	if err := os.Mkdir(m.Backing("in"), 0o755); err != nil {
		t.Fatal(err)
	}
	putFile(t, m.Backing("in/eicar.com"), clamdtest.EICAR())
	opsWantErrno(t, m, m.Path("in/eicar.com"), syscall.EACCES)

	if _, err := os.Lstat(m.Backing("in/eicar.com")); !os.IsNotExist(err) {
		t.Fatalf("infected file still in the backing directory: %v", err)
	}
	opsWantErrno(t, m, m.Path("in/eicar.com"), syscall.ENOENT)
	entries, err := os.ReadDir(q)
	if err != nil || len(entries) != 2 || entries[1].Name() != entries[0].Name()+".json" {
		t.Fatalf("quarantine holds %v, %v; want the file and its record", entries, err)
	}
	qfile := filepath.Join(q, entries[0].Name())
	if data, err := os.ReadFile(qfile); err != nil || !bytes.Equal(data, clamdtest.EICAR()) {
		t.Fatalf("quarantined file: %q, %v", data, err)
	}
	var rec map[string]any
	if raw, err := os.ReadFile(qfile + ".json"); err != nil || json.Unmarshal(raw, &rec) != nil {
		t.Fatalf("record: %v", err)
	}
	if rec["path"] != "in/eicar.com" || rec["source"] != m.Backing("in/eicar.com") || rec["method"] != "copy" ||
		rec["signature"] != clamdtest.EICARSignature || rec["opener_uid"] != float64(os.Getuid()) {
		t.Errorf("record = %v", rec)
	}

	eventually(t, opsBound, "audit line", func() bool { return len(opsJSONLines(m, "detection")) > 0 })
	audit := opsJSONLines(m, "detection")
	if len(audit) != 1 || audit[0]["level"] != "WARN" || audit[0]["path"] != "in/eicar.com" ||
		audit[0]["signature"] != clamdtest.EICARSignature || audit[0]["clamd"] != c.Address() ||
		audit[0]["action"] != "quarantined to "+qfile || audit[0]["pid"] == nil || audit[0]["uid"] != float64(os.Getuid()) {
		t.Errorf("audit lines = %v", audit)
	}
	eventually(t, opsBound, "command output", func() bool {
		b, _ := os.ReadFile(envOut)
		return bytes.Contains(b, []byte("CLAMFUSE_UID="))
	})
	env, _ := os.ReadFile(envOut)
	// clamfuse serves with umask 0; the command runs with the umask
	// clamfuse started with (this test's), and clamfuse's own files have
	// explicit modes.
	testUmask := unix.Umask(0o022)
	unix.Umask(testUmask)
	if fi, err := os.Stat(envOut); err != nil || uint32(fi.Mode().Perm()) != 0o666&^uint32(testUmask) {
		t.Errorf("file made by the command: mode %v %v, want %04o (the umask clamfuse started with)", fi.Mode(), err, 0o666&^testUmask)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("quarantine entry %s: mode %v %v, want no access for group or others", e.Name(), fi.Mode(), err)
		}
	}
	for _, want := range []string{
		"CLAMFUSE_PATH=" + m.Path("in/eicar.com"), "CLAMFUSE_SOURCE=" + m.Backing("in/eicar.com"),
		"CLAMFUSE_SIGNATURE=" + clamdtest.EICARSignature, "CLAMFUSE_UID=" + strconv.Itoa(os.Getuid()),
		"CLAMFUSE_QUARANTINE=" + qfile, "CLAMFUSE_PID=",
	} {
		if !bytes.Contains(env, []byte("\n"+want)) && !bytes.HasPrefix(env, []byte(want)) {
			t.Errorf("command environment lacks %q:\n%s", want, env)
		}
	}
}

// TestOpsQuarantineFails: a quarantine that cannot be done leaves the
// file where it was, still denied, with the error in the audit line; the
// command runs once however often the file is opened.
func TestOpsQuarantineFails(t *testing.T) {
	t.Parallel()
	c := clamdtest.New(t, clamdtest.Options{})
	out := filepath.Join(t.TempDir(), "runs")
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = %q
[actions]
quarantine_dir = %q
on_infected = ["/bin/sh", "-c", "echo run >> %s"]
`, c.Address(), filepath.Join(t.TempDir(), "does-not-exist"), out)})
	putFile(t, m.Backing("eicar.com"), clamdtest.EICAR())
	for range 3 {
		opsWantErrno(t, m, m.Path("eicar.com"), syscall.EACCES)
	}
	if data, err := os.ReadFile(m.Backing("eicar.com")); err != nil || !bytes.Equal(data, clamdtest.EICAR()) {
		t.Fatalf("original: %q, %v; want it intact", data, err)
	}
	// The actions run within the open that is denied, before it returns:
	// the audit line is written and the command started. A line logged
	// after the three opens returned (logBarrier) comes after every
	// audit line they wrote; a command started comes with one.
	logBarrier(t, m)
	if n := len(m.Log.Lines("msg=detection")); n != 1 {
		t.Errorf("%d detection lines for 3 opens of one file; want 1", n)
	}
	m.WaitLogLines(t, opsBound, "on_infected command done")
	if b, _ := os.ReadFile(out); string(b) != "run\n" {
		t.Errorf("command ran %q; want once", b)
	}
}

// logBarrier makes clamfuse log a line now (SIGHUP: it reloads its
// configuration, unchanged) and waits for it: every line clamfuse wrote
// before is then in m.Log, whose copy from clamfuse's stderr lags.
func logBarrier(t *testing.T, m *mounttest.Mount) {
	t.Helper()
	n := len(m.Log.Lines("SIGHUP received"))
	mustDo(t, m.Signal(syscall.SIGHUP))
	m.WaitLogLinesAfter(t, opsBound, n, "SIGHUP received")
}

// opsFreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func opsFreePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// opsScrape returns the samples at url by name and labels.
func opsScrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// TestOpsMetrics scrapes /metrics after known traffic.
func TestOpsMetrics(t *testing.T) {
	t.Parallel()
	c := clamdtest.New(t, clamdtest.Options{})
	addr := opsFreePort(t)
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = %q
[metrics]
listen = %q
`, c.Address(), addr)})
	m.WaitLogLines(t, opsBound, "serving metrics", addr)
	clean := []byte("a clean file")
	putFile(t, m.Backing("clean.txt"), clean)
	putFile(t, m.Backing("eicar.com"), clamdtest.EICAR())
	// Verdicts are cached once the files' times are old enough
	// (cache/racy.go).
	waitTimesOld(t, m.Backing("eicar.com"), fineSettle)
	opsWantRead(t, m, m.Path("clean.txt"), clean)
	opsWantRead(t, m, m.Path("clean.txt"), clean)
	opsWantErrno(t, m, m.Path("eicar.com"), syscall.EACCES)
	opsWantErrno(t, m, m.Path("eicar.com"), syscall.EACCES)

	s := opsScrape(t, "http://"+addr+"/metrics")
	for k, want := range map[string]float64{
		`clamfuse_opens_total{decision="allow",reason="clean"}`:   2,
		`clamfuse_opens_total{decision="deny",reason="infected"}`: 2,
		`clamfuse_denials_total{reason="infected"}`:               2,
		`clamfuse_scans_total{result="clean"}`:                    1,
		`clamfuse_scans_total{result="infected"}`:                 1,
		`clamfuse_scans_total{result="error"}`:                    0,
		`clamfuse_scanned_bytes_total`:                            float64(len(clean) + len(clamdtest.EICAR())),
		`clamfuse_scan_duration_seconds_count`:                    2,
		`clamfuse_cache_hits_total`:                               2,
		`clamfuse_cache_misses_total`:                             2,
		`clamfuse_cache_entries`:                                  2,
		`clamfuse_clamd_up{backend="` + c.Address() + `"}`:        1,
		`clamfuse_detections_total`:                               1,
	} {
		if got, ok := s[k]; !ok || got != want {
			t.Errorf("%s = %v (present: %v); want %v", k, got, ok, want)
		}
	}
}

// TestOpsBackends: with two clamds, scans go on when one dies; with both
// down opens of unscanned files are denied; one back serves again.
func TestOpsBackends(t *testing.T) {
	t.Parallel()
	a := clamdtest.New(t, clamdtest.Options{})
	b := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = [%q, %q]
timeout = "5s"
check_interval = "200ms"
`, a.Address(), b.Address())})
	file := func(name string) []byte {
		data := []byte("content of " + name)
		putFile(t, m.Backing(name), data)
		return data
	}
	for i := range 4 {
		name := fmt.Sprintf("before-%d", i)
		opsWantRead(t, m, m.Path(name), file(name))
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		name := fmt.Sprintf("one-down-%d", i)
		opsWantRead(t, m, m.Path(name), file(name))
	}
	putFile(t, m.Backing("eicar.com"), clamdtest.EICAR())
	opsWantErrno(t, m, m.Path("eicar.com"), syscall.EACCES)
	m.WaitLogLines(t, opsBound, "clamd backend down", a.Socket)

	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	file("both-down")
	opsWantErrno(t, m, m.Path("both-down"), syscall.EACCES)

	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	opsWantRead(t, m, m.Path("both-down"), []byte("content of both-down"))
	m.WaitLogLines(t, opsBound, "clamd backend up", a.Socket)
	m.WaitLogLines(t, opsBound, "level=WARN", "infected file denied", "path=eicar.com ", "clamd=unix:"+b.Socket)
}

// TestOpsReload: SIGHUP applies a new configuration (exclude, log level),
// reports what needs a remount, and keeps the old one when the new one is
// bad.
func TestOpsReload(t *testing.T) {
	t.Parallel()
	c := clamdtest.New(t, clamdtest.Options{})
	base := fmt.Sprintf("[clamd]\naddress = %q\n", c.Address())
	m := mounttest.Start(t, mounttest.Options{Config: base})
	cfgPath := opsConfigPath(t, m)
	putFile(t, m.Backing("sample.bin"), clamdtest.EICAR())
	putFile(t, m.Backing("plain.txt"), []byte("plain"))
	opsWantErrno(t, m, m.Path("sample.bin"), syscall.EACCES)

	reloaded := func(n int) {
		t.Helper()
		eventually(t, opsBound, "reload", func() bool {
			return len(m.Log.Lines("configuration reloaded"))+len(m.Log.Lines("configuration not reloaded")) >= n
		})
	}
	// Exclude *.bin, debug logging, and a change that needs a remount.
	putFile(t, cfgPath, []byte(base+"[scan]\nexclude = [\"*.bin\"]\n[log]\nlevel = \"debug\"\n[mount]\nread_only = true\n"))
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloaded(1)
	m.WaitLogLines(t, opsBound, "level=INFO", "configuration reloaded", "scan.exclude", "log.level")
	m.WaitLogLines(t, opsBound, "level=WARN", "configuration change not applied", "key=mount.read_only")
	opsWantRead(t, m, m.Path("sample.bin"), clamdtest.EICAR()) // excluded now
	opsWantRead(t, m, m.Path("plain.txt"), []byte("plain"))
	m.WaitLogLines(t, opsBound, "level=DEBUG", "path=plain.txt")
	if err := os.WriteFile(m.Path("written.txt"), []byte("still writable"), 0o644); err != nil {
		t.Errorf("write after a reload asking read_only: %v; want the mount unchanged", err)
	}

	// A bad file is rejected whole, with one line, and changes nothing.
	putFile(t, cfgPath, []byte(base+"[scan]\nexclude = []\nmax_size = \"lots\"\n"))
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloaded(2)
	lines := m.WaitLogLines(t, opsBound, "level=ERROR", "configuration not reloaded", "scan.max_size")
	if len(lines) != 1 {
		t.Errorf("error lines = %q; want one", lines)
	}
	opsWantRead(t, m, m.Path("sample.bin"), clamdtest.EICAR()) // exclude kept
	select {
	case <-m.Exited():
		t.Fatalf("clamfuse exited after a bad reload\n%s", m.Log.String())
	default:
	}

	// Back to scanning everything.
	putFile(t, cfgPath, []byte(base))
	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloaded(3)
	opsWantErrno(t, m, m.Path("sample.bin"), syscall.EACCES)
}
