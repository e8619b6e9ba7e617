package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cffs "github.com/clamfuse/clamfuse/fs"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// TestFloorFS builds floorfs, mounts it on a small tree and checks, with
// commands run as separate processes, that the mount shows the tree as it
// is (ls -lR, contents, readlink, stat), then that SIGTERM unmounts it and
// exits 0.
func TestFloorFS(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "floorfs mounts with mount(2): needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Skip(t, "no /dev/fuse: %v", err)
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Skip(t, "gcc not installed (Debian package gcc): cannot build floorfs")
	}
	dir := t.TempDir()
	bin, err := buildFloor(context.Background(), filepath.Join("..", "..", ".."), dir)
	if err != nil {
		t.Fatal(err)
	}

	src, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "mnt")
	big := make([]byte, 3<<20)
	x := uint32(1)
	for i := range big {
		x = x*1664525 + 1013904223
		big[i] = byte(x >> 24)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"a.txt", []byte("hello floor\n"), 0o644},
		{"empty", nil, 0o600},
		{"big.bin", big, 0o640},
		{"d/b.txt", []byte("in d\n"), 0o444},
		{"d/e/deep.txt", []byte(strings.Repeat("deep ", 1000)), 0o755},
		{"private/p", []byte("p"), 0o600},
	}
	for _, f := range files {
		p := filepath.Join(src, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(src, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d/e", filepath.Join(src, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}

	m, err := startMount(exec.Command(bin, src, mnt), mnt, filepath.Join(dir, "floorfs.log"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.teardown()

	// run runs a command in dir, aborting the mount if it hangs.
	run := func(dir string, name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			m.abort()
			t.Fatalf("%s %v in %s: no answer after 30s: mount aborted", name, args, dir)
		}
		if err != nil {
			t.Fatalf("%s %v in %s: %v: %s", name, args, dir, err, out)
		}
		return string(out)
	}

	// ls -lR: names, types, modes, link counts, owners, sizes, times, link targets.
	if want, got := run(src, "ls", "-lRn", "--time-style=full-iso"), run(mnt, "ls", "-lRn", "--time-style=full-iso"); got != want {
		t.Errorf("ls -lR through the mount:\n%s\nbacking directory:\n%s", got, want)
	}
	// stat of every entry, inode numbers and block counts included.
	var names []string
	_ = filepath.WalkDir(src, func(p string, _ os.DirEntry, _ error) error {
		rel, _ := filepath.Rel(src, p)
		names = append(names, rel)
		return nil
	})
	const format = "%n %F %f %s %b %h %u %g %i %X %Y %Z"
	statArgs := append([]string{"-c", format}, names...)
	if want, got := run(src, "stat", statArgs...), run(mnt, "stat", statArgs...); got != want {
		t.Errorf("stat through the mount:\n%s\nbacking directory:\n%s", got, want)
	}
	// Contents, read by another process.
	for _, f := range files {
		run(dir, "cmp", filepath.Join(src, f.name), filepath.Join(mnt, f.name))
	}
	run(dir, "cmp", filepath.Join(src, "a.txt"), filepath.Join(mnt, "link"))
	run(dir, "cmp", filepath.Join(src, "d/e/deep.txt"), filepath.Join(mnt, "dirlink/deep.txt"))
	if got := strings.TrimSpace(run(mnt, "readlink", "link", "dirlink")); got != "a.txt\nd/e" {
		t.Errorf("readlink link dirlink: %q, want a.txt, d/e", got)
	}
	// Read-only: a write open fails.
	if out, err := exec.Command("sh", "-c", "echo x >> "+filepath.Join(mnt, "a.txt")).CombinedOutput(); err == nil {
		t.Errorf("appending through the read-only mount succeeded: %s", out)
	}

	// SIGTERM: floorfs detaches the mount and exits 0 by itself.
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.exited:
	case <-time.After(unmountTimeout):
		t.Fatalf("floorfs still running %v after SIGTERM", unmountTimeout)
	}
	if m.exitErr != nil {
		t.Errorf("floorfs after SIGTERM: %v (log: %s)", m.exitErr, tail(m.logPath))
	}
	if cffs.IsFuseMount(mnt) {
		t.Errorf("%s still a FUSE mount after floorfs exited", mnt)
	}
}

// TestFloorWithoutGCC: without gcc the floor is not measured, and its
// section says why; nothing else fails.
func TestFloorWithoutGCC(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	b := &bench{ctx: context.Background(), repo: filepath.Join("..", "..", ".."), opts: options{dir: t.TempDir()}}
	fl := &system{name: "FUSE floor", kind: kindFloor, b: b, mnt: filepath.Join(b.opts.dir, "mnt")}
	native := &system{name: "native", kind: kindNative, b: b}
	b.systems = []*system{native, fl}
	b.setupFloor(fl)
	if !strings.Contains(fl.broken, "gcc not installed") {
		t.Fatalf("floor without gcc: broken = %q", fl.broken)
	}
	w := workloadByID("ls-cold")
	b.results = []*result{{w: w, title: "ls", per: map[kind]*series{
		kindNative: {wall: []time.Duration{time.Millisecond}},
		kindFloor:  {na: fl.broken},
	}}}
	var out strings.Builder
	b.reportFloor(func(format string, args ...any) { fmt.Fprintf(&out, format, args...) })
	if !strings.Contains(out.String(), "## The FUSE floor") || !strings.Contains(out.String(), "not measured: gcc not installed") {
		t.Errorf("report section:\n%s", out.String())
	}
}
