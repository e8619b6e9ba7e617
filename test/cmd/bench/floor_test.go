package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// TestFloorFSPassthrough: floorfs -p, the passthrough floor. The kernel
// reads an open file itself (proved with floorfs stopped: the reads go
// on), two opens of one file at once share its backing file, and the
// write row's operations work through the mount (create, write, fsync,
// truncate, chmod, times, unlink, create again under the same name),
// checked in the backing directory; SIGTERM unmounts it.
func TestFloorFSPassthrough(t *testing.T) {
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
	for _, d := range []string{src, filepath.Join(src, "scratch"), mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 3<<20)
	x := uint32(7)
	for i := range big {
		x = x*1664525 + 1013904223
		big[i] = byte(x >> 24)
	}
	if err := os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}

	logPath := filepath.Join(dir, "floorfs.log")
	m, err := startMount(exec.Command(bin, "-p", src, mnt), mnt, logPath, false)
	if err != nil {
		if strings.Contains(err.Error(), "does not offer FUSE passthrough") {
			testenv.Skip(t, "the kernel grants no FUSE passthrough (Linux 6.9+): %v", err)
		}
		t.Fatal(err)
	}
	defer m.teardown()

	run := func(name string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if ctx.Err() != nil {
			m.abort()
			t.Fatalf("%s %v: no answer after 30s: mount aborted", name, args)
		}
		if err != nil {
			t.Fatalf("%s %v: %v: %s (log: %s)", name, args, err, out, tail(logPath))
		}
	}
	backingIs := func(name string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("backing %s: %d bytes, not the %d written through the mount", name, len(got), len(want))
		}
	}

	run("cmp", filepath.Join(src, "big.bin"), filepath.Join(mnt, "big.bin"))

	// Two opens at once: the second shares the first's backing file (a
	// second backing file for the inode would fail its open with EIO).
	fd1, err := unix.Open(filepath.Join(mnt, "big.bin"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd2, err := unix.Open(filepath.Join(mnt, "big.bin"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd1)
		t.Fatalf("second open of big.bin while the first is open: %v (log: %s)", err, tail(logPath))
	}
	// floorfs stopped, the kernel still reads both: no READ reaches it.
	if err := m.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for _, fd := range []int{fd1, fd2} {
			got := make([]byte, 0, len(big))
			buf := make([]byte, 128<<10)
			for {
				n, err := unix.Read(fd, buf)
				if err != nil {
					done <- err
					return
				}
				if n == 0 {
					break
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, big) {
				done <- fmt.Errorf("read %d bytes, not big.bin's %d", len(got), len(big))
				return
			}
		}
		done <- nil
	}()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		m.abort() // unblocks the reads
		<-done
		err = errors.New("the reads waited for the stopped floorfs: not passed through")
	}
	_ = m.cmd.Process.Signal(syscall.SIGCONT)
	unix.Close(fd1)
	unix.Close(fd2)
	if err != nil {
		t.Fatalf("reading big.bin twice through the mount with floorfs stopped: %v", err)
	}

	// The write row, and what a writer may do beside it.
	out := filepath.Join(mnt, "scratch", "dd.out")
	run("dd", "if="+filepath.Join(src, "big.bin"), "of="+out, "bs=1M", "conv=fsync", "status=none")
	backingIs("scratch/dd.out", big)
	run("truncate", "-s", "100", out)
	run("chmod", "600", out)
	run("touch", "-d", "2020-01-02 03:04:05", out)
	backingIs("scratch/dd.out", big[:100])
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(src, "scratch", "dd.out"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o600 || time.Unix(st.Mtim.Unix()).UTC() != time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC) {
		t.Errorf("backing dd.out: mode %o, mtime %v after chmod 600 and touch through the mount", st.Mode&0o7777, time.Unix(st.Mtim.Unix()).UTC())
	}
	run("rm", out)
	if _, err := os.Stat(filepath.Join(src, "scratch", "dd.out")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backing dd.out after rm through the mount: %v", err)
	}
	run("sh", "-c", "echo again > "+out)
	backingIs("scratch/dd.out", []byte("again\n"))
	run("cmp", filepath.Join(src, "scratch", "dd.out"), out)

	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.exited:
	case <-time.After(unmountTimeout):
		t.Fatalf("floorfs -p still running %v after SIGTERM", unmountTimeout)
	}
	if m.exitErr != nil {
		t.Errorf("floorfs -p after SIGTERM: %v (log: %s)", m.exitErr, tail(logPath))
	}
	if cffs.IsFuseMount(mnt) {
		t.Errorf("%s still a FUSE mount after floorfs -p exited", mnt)
	}
}
