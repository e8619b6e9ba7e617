package actions_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/cache/actions"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// env is a backing directory, a gate on a real clamd, and a log.
type env struct {
	t     *testing.T
	clamd *clamdtest.Clamd
	gate  *cache.Gate
	src   string // backing root
	log   *testenv.SyncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := clamdtest.New(t, clamdtest.Options{})
	network, addr, err := clamav.ParseAddress(c.Address())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p, err := clamav.NewPool([]*clamav.Client{cl}, clamav.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Check(t.Context())
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, clamd: c, gate: cache.NewGate(p, cache.Options{MaxEntries: 64}), src: src, log: &testenv.SyncBuffer{}}
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// detect writes content as sub/name, opens it as the filesystem does and
// asks the gate; it returns the decision and the parent's O_PATH
// descriptor (closed at cleanup).
func (e *env) detect(name string, content []byte) (cache.Decision, int) {
	t := e.t
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.src, "sub", name), content, 0o644); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(filepath.Join(e.src, "sub"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(dirfd) })
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	return e.gate.Check(ctx, f, who(name)), dirfd
}

func who(name string) cache.Opener { return cache.Opener{Path: "sub/" + name, Pid: 4242, Uid: 1001} }

func (e *env) runner(opts actions.Options) *actions.Runner {
	opts.Source, opts.MountPoint, opts.Logger = e.src, "/mnt/in", e.logger()
	r := actions.New(opts)
	e.t.Cleanup(r.Wait)
	return r
}

// detections returns the "detection" audit lines.
func (e *env) detections() []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(e.log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "detection" {
			out = append(out, m)
		}
	}
	return out
}

func (e *env) oneDetection(wantAction string) map[string]any {
	e.t.Helper()
	ds := e.detections()
	if len(ds) != 1 {
		e.t.Fatalf("%d detection lines; want 1:\n%s", len(ds), e.log)
	}
	d := ds[0]
	for k, v := range map[string]any{
		"level": "WARN", "path": "sub/eicar.com", "signature": clamdtest.EICARSignature,
		"pid": float64(4242), "uid": float64(1001), "clamd": e.clamd.Address(),
	} {
		if d[k] != v {
			e.t.Errorf("detection %s = %v; want %v", k, d[k], v)
		}
	}
	if a, _ := d["action"].(string); !strings.HasPrefix(a, wantAction) {
		e.t.Errorf("detection action = %q; want it to start with %q", a, wantAction)
	}
	return d
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// checkQuarantined checks the quarantine holds exactly the file and its
// record, and returns the record.
func (e *env) checkQuarantined(qdir, method string) map[string]any {
	t := e.t
	t.Helper()
	if _, err := os.Lstat(filepath.Join(e.src, "sub", "eicar.com")); !os.IsNotExist(err) {
		t.Errorf("original still in the backing directory: %v", err)
	}
	entries, err := os.ReadDir(qdir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("quarantine holds %v; want the file and its record", entries)
	}
	name := entries[0].Name() // sorted: NAME before NAME.json
	if entries[1].Name() != name+".json" || !strings.HasSuffix(name, "-eicar.com") {
		t.Fatalf("quarantine holds %s and %s", name, entries[1].Name())
	}
	data, err := os.ReadFile(filepath.Join(qdir, name))
	if err != nil || !bytes.Equal(data, clamdtest.EICAR()) {
		t.Fatalf("quarantined file: %q, %v; want the EICAR bytes", data, err)
	}
	var rec map[string]any
	raw, err := os.ReadFile(filepath.Join(qdir, name+".json"))
	if err != nil || json.Unmarshal(raw, &rec) != nil {
		t.Fatalf("record: %s, %v", raw, err)
	}
	for k, v := range map[string]any{
		"path": "sub/eicar.com", "source": filepath.Join(e.src, "sub/eicar.com"), "mount_path": "/mnt/in/sub/eicar.com",
		"quarantined_as": filepath.Join(qdir, name), "method": method,
		"signature": clamdtest.EICARSignature, "clamd": e.clamd.Address(),
		"size": float64(len(clamdtest.EICAR())), "sha256": sha(clamdtest.EICAR()), "mode": "0644",
		"opener_pid": float64(4242), "opener_uid": float64(1001),
	} {
		if rec[k] != v {
			t.Errorf("record %s = %v; want %v", k, rec[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, rec["time"].(string)); err != nil {
		t.Errorf("record time: %v", err)
	}
	d := e.oneDetection("quarantined to " + filepath.Join(qdir, name))
	if d["quarantine"] != filepath.Join(qdir, name) {
		t.Errorf("detection quarantine = %v", d["quarantine"])
	}
	return rec
}

func (e *env) checkIntact() {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.src, "sub", "eicar.com"))
	if err != nil || !bytes.Equal(data, clamdtest.EICAR()) {
		e.t.Fatalf("original: %q, %v; want it intact", data, err)
	}
}

// TestQuarantineRename: on the same filesystem the file is renamed into
// the quarantine, with its record; a second denied open does nothing.
func TestQuarantineRename(t *testing.T) {
	e := newEnv(t)
	qdir := filepath.Join(t.TempDir(), "q")
	if err := os.Mkdir(qdir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := e.runner(actions.Options{QuarantineDir: qdir})
	d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
	if d.Reason != cache.ReasonInfected {
		t.Fatalf("decision %+v; want infected", d)
	}
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com") // the same state again: nothing
	e.checkQuarantined(qdir, "rename")
	if st := r.Stats(); st.Detections != 1 || st.Quarantined != 1 {
		t.Errorf("Stats = %+v", st)
	}
	fi, err := os.Stat(filepath.Join(qdir, mustGlob(t, qdir, "*.com")))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("quarantined file: %v, %v; want mode 0400", fi, err)
	}
}

func mustGlob(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) != 1 {
		t.Fatalf("glob %s: %v", pattern, m)
	}
	return filepath.Base(m[0])
}

// tmpfs mounts a small tmpfs for the test: another filesystem.
func tmpfs(t *testing.T, opts string, flags uintptr) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, opts); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestQuarantineCopy: on another filesystem the file is copied, checked
// and only then removed.
func TestQuarantineCopy(t *testing.T) {
	e := newEnv(t)
	qdir := tmpfs(t, "size=1m,mode=0700", 0)
	r := e.runner(actions.Options{QuarantineDir: qdir})
	d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	e.checkQuarantined(qdir, "copy")
}

// TestQuarantineFails: whatever goes wrong, the original stays where it
// was, the error is in the audit line, and the open is still denied (the
// decision is the gate's).
func TestQuarantineFails(t *testing.T) {
	tests := []struct {
		name   string
		qdir   func(t *testing.T) string
		before func(e *env)
		want   string
	}{
		{"nonexistent", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") }, nil,
			"quarantine failed: quarantine directory"},
		{"read-only filesystem", func(t *testing.T) string { return tmpfs(t, "size=1m", unix.MS_RDONLY) }, nil,
			"quarantine failed: create in the quarantine: read-only file system"},
		{"full filesystem", func(t *testing.T) string {
			q := tmpfs(t, "size=4k", 0)
			if err := os.WriteFile(filepath.Join(q, "filler"), bytes.Repeat([]byte("f"), 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			return q
		}, nil, "quarantine failed: copy: write"},
		{"changed since the scan", func(t *testing.T) string { return t.TempDir() }, func(e *env) {
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(filepath.Join(e.src, "sub", "eicar.com"), later, later); err != nil {
				t.Fatal(err)
			}
		}, "quarantine failed: the file changed since it was scanned; left in place"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			qdir := tt.qdir(t)
			r := e.runner(actions.Options{QuarantineDir: qdir})
			d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
			if tt.before != nil {
				tt.before(e)
			}
			r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
			e.checkIntact()
			e.oneDetection(tt.want)
			if st := r.Stats(); st.QuarantineFailed != 1 || st.Quarantined != 0 {
				t.Errorf("Stats = %+v", st)
			}
			if entries, _ := os.ReadDir(qdir); len(entries) > 1 {
				t.Errorf("quarantine left with %v", entries)
			}
		})
	}
}

// TestCommand: the command runs once per file state, in the background,
// with the CLAMFUSE_* variables; a slow one is killed at its timeout.
func TestCommand(t *testing.T) {
	e := newEnv(t)
	out := filepath.Join(t.TempDir(), "env")
	r := e.runner(actions.Options{Command: []string{"/bin/sh", "-c", "env | grep ^CLAMFUSE_ | sort > " + out}})
	d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
	for range 3 {
		r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	}
	r.Wait()
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"CLAMFUSE_ACTION=denied",
		"CLAMFUSE_CLAMD=" + e.clamd.Address(),
		"CLAMFUSE_PATH=/mnt/in/sub/eicar.com",
		"CLAMFUSE_PID=4242",
		"CLAMFUSE_QUARANTINE=",
		"CLAMFUSE_SIGNATURE=" + clamdtest.EICARSignature,
		"CLAMFUSE_SOURCE=" + filepath.Join(e.src, "sub/eicar.com"),
		"CLAMFUSE_UID=1001",
	}, "\n") + "\n"
	if string(got) != want {
		t.Errorf("command saw:\n%s\nwant:\n%s", got, want)
	}
	if st := r.Stats(); st.Commands != 1 || st.CommandsFailed != 0 || st.Detections != 1 {
		t.Errorf("Stats = %+v; want one command run for three opens", st)
	}
	if !strings.Contains(e.log.String(), `"msg":"on_infected command done"`) {
		t.Errorf("no log line for the command:\n%s", e.log)
	}

	// A new state of the file (new content, same name) is a new detection.
	d2, dirfd2 := e.detect("eicar.com", append([]byte("now with "), clamdtest.Marker()...))
	if d2.Reason != cache.ReasonInfected {
		t.Fatalf("marker file: %+v; want infected", d2)
	}
	r.Infected(d2, who("eicar.com"), dirfd2, "eicar.com")
	r.Wait()
	if st := r.Stats(); st.Commands != 2 {
		t.Errorf("Stats = %+v; want a second command for the new state", st)
	}
}

// TestCommandLauncher: the launcher's argv runs first, with the command's
// after it.
func TestCommandLauncher(t *testing.T) {
	e := newEnv(t)
	out := filepath.Join(t.TempDir(), "out")
	r := e.runner(actions.Options{
		Launcher: []string{"/usr/bin/env", "LAUNCHED=yes"},
		Command:  []string{"/bin/sh", "-c", "echo $LAUNCHED > " + out},
	})
	d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	r.Wait()
	if got, err := os.ReadFile(out); err != nil || string(got) != "yes\n" {
		t.Errorf("command through the launcher wrote %q, %v; want \"yes\\n\"", got, err)
	}
}

func TestCommandTimeout(t *testing.T) {
	e := newEnv(t)
	r := e.runner(actions.Options{Command: []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}, CommandTimeout: 200 * time.Millisecond})
	d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
	began := time.Now()
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	if took := time.Since(began); took > 150*time.Millisecond {
		t.Errorf("Infected took %v: the command must not block the open", took)
	}
	r.Wait()
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("command ran %v; want it killed after 200ms", took)
	}
	if st := r.Stats(); st.Commands != 1 || st.CommandsFailed != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if !strings.Contains(e.log.String(), "on_infected command killed after its timeout") {
		t.Errorf("no timeout line:\n%s", e.log)
	}
}

// TestSetOptionsForgets: new actions apply to files already acted on.
func TestSetOptionsForgets(t *testing.T) {
	e := newEnv(t)
	r := e.runner(actions.Options{QuarantineDir: filepath.Join(t.TempDir(), "missing")})
	d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	e.checkIntact()
	qdir := t.TempDir()
	r.SetOptions(actions.Options{QuarantineDir: qdir, Source: e.src, MountPoint: "/mnt/in", Logger: e.logger()})
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	if st := r.Stats(); st.Detections != 2 || st.Quarantined != 1 {
		t.Errorf("Stats = %+v; want the file acted on again and quarantined", st)
	}
}

// TestClose: commands still running at Close are killed after the grace
// period, and Close returns.
func TestClose(t *testing.T) {
	e := newEnv(t)
	r := e.runner(actions.Options{Command: []string{"/bin/sleep", "30"}, CommandTimeout: time.Minute})
	d, dirfd := e.detect("eicar.com", clamdtest.EICAR())
	r.Infected(d, who("eicar.com"), dirfd, "eicar.com")
	began := time.Now()
	r.Close(100 * time.Millisecond)
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Close took %v", took)
	}
	if st := r.Stats(); st.Commands != 1 || st.CommandsFailed != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if !strings.Contains(e.log.String(), "clamfuse is stopping") {
		t.Errorf("no log line for the killed command:\n%s", e.log)
	}
}
