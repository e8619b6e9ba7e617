package test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
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

// Faults, second part. The rule: fail closed, no hang past the timeout,
// no data lost.

// bigClean writes a clean file of n bytes to p quickly (repeated blocks).
func bigClean(t *testing.T, p string, n int) {
	t.Helper()
	block := pseudoRandom(1<<20, 77)
	f, err := os.Create(p)
	mustDo(t, err)
	for left := n; left > 0; left -= len(block) {
		_, err := f.Write(block[:min(left, len(block))])
		mustDo(t, err)
	}
	mustDo(t, f.Close())
}

// procIOWrite returns the bytes process pid has written (wchar), which
// grows as clamfuse streams a file to clamd.
func procIOWrite(t *testing.T, pid int) int64 { return procIO(t, pid, "wchar") }

// procIO returns a field of /proc/PID/io: "wchar", or "rchar" (which
// grows as clamd reads a file passed to it with FILDES).
func procIO(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	mustDo(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+": "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/io", field, pid)
	return 0
}

// waitStreaming waits until clamfuse has written min bytes more than
// base (to clamd: nothing else writes that much), or fails t.
func waitStreaming(t *testing.T, pid int, base, min int64, done <-chan struct{}) {
	t.Helper()
	waitIO(t, pid, "wchar", base, min, done)
}

// waitIO waits until the field of pid's /proc/PID/io has grown by min
// over base, or fails t.
func waitIO(t *testing.T, pid int, field string, base, min int64, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for procIO(t, pid, field)-base < min {
		select {
		case <-done:
			t.Fatalf("the open returned before %d bytes were streamed (%s of pid %d)", min, field, pid)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes not streamed in 30s (%s of pid %d)", min, field, pid)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func clamdPID(t *testing.T, c *clamdtest.Clamd) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, "clamd.pid"))
	mustDo(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	mustDo(t, err)
	return pid
}

// TestFaultClamdKilledMidStream: clamd dies (SIGKILL) while clamfuse is
// streaming a 200 MiB file to it (INSTREAM), or while clamd reads the file
// clamfuse passed it (FILDES). The open is denied, promptly, and nothing
// is cached: with clamd back, the same file is scanned again and reads.
func TestFaultClamdKilledMidStream(t *testing.T) {
	mounttest.Require(t)
	for _, transport := range []string{"instream", "fildes"} {
		t.Run(transport, func(t *testing.T) { testClamdKilledMidScan(t, transport) })
	}
}

func testClamdKilledMidScan(t *testing.T, transport string) {
	c := clamdtest.New(t, clamdtest.Options{MaxFileSize: "400M", StreamMaxLength: "400M"})
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = %q
timeout = "60s"
transport = %q
[scan]
max_size = "400MiB"
`, c.Address(), transport)})
	const size = 200 << 20
	bigClean(t, m.Backing("big.bin"), size)
	pid := m.Cmd.Process.Pid
	base := procIOWrite(t, pid)
	// With FILDES clamd reads the file: watch clamd's reads instead.
	watch, field := pid, "wchar"
	if transport == "fildes" {
		watch, field = clamdPID(t, c), "rchar"
		base = procIO(t, watch, field)
	}
	done := make(chan struct{})
	var openErr error
	var opened time.Time
	go func() {
		defer close(done)
		f, err := os.Open(m.Path("big.bin"))
		opened = time.Now()
		if err == nil {
			f.Close()
		}
		openErr = err
	}()
	waitIO(t, watch, field, base, 16<<20, done)
	killed := time.Now()
	mustDo(t, syscall.Kill(clamdPID(t, c), syscall.SIGKILL))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		m.Abort()
		<-done
		t.Fatalf("open still blocked 30s after clamd was killed; connection aborted")
	}
	t.Logf("open returned %v after clamd was killed", opened.Sub(killed).Round(time.Millisecond))
	if !errors.Is(openErr, syscall.EACCES) {
		t.Fatalf("open while clamd died mid-stream: %v, want EACCES", openErr)
	}
	m.WaitLogLines(t, 15*time.Second, "level=WARN", "path=big.bin", "reason=error")
	if got := procIOWrite(t, pid) - base; transport == "instream" && got >= size {
		t.Logf("note: %d bytes streamed, the whole file: clamd died at the very end", got)
	}

	// No verdict was cached: with clamd back the file is scanned again.
	mustDo(t, c.Restart())
	before, err := c.ScanCount()
	mustDo(t, err)
	var f *os.File
	m.Within(t, 2*time.Minute, "open with clamd back", func() { f, err = os.Open(m.Path("big.bin")) })
	if err != nil {
		t.Fatalf("open with clamd back: %v", err)
	}
	f.Close()
	if after := waitScanCount(t, c, before+1); after != before+1 {
		t.Errorf("open with clamd back: %d scans, want 1", after-before)
	}
}

// TestFaultBackingFull: the backing filesystem is a 2 MiB tmpfs with few
// inodes. A writer through the mount gets ENOSPC, and nothing else breaks:
// files already there keep their bytes and read, the bytes a failed
// writer did write are there, and once space is freed (and back: a scan
// of the removed file may hold it a moment) the mount works as before.
func TestFaultBackingFull(t *testing.T) {
	mounttest.Require(t)
	src := mountTmpfs(t, "size=2m,nr_inodes=64,mode=0755")
	keep := pseudoRandom(300<<10, 5)
	mustDo(t, os.WriteFile(filepath.Join(src, "keep.bin"), keep, 0o644))
	c := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Source: src, Args: []string{"--clamd", c.Address(), "--timeout", "30s"}})

	var s unix.Statfs_t
	mustDo(t, unix.Statfs(m.Target, &s))
	if total := int64(s.Blocks) * int64(s.Frsize); total > 3<<20 {
		t.Errorf("statfs through the mount: %d bytes in all, want the 2 MiB tmpfs", total)
	}

	// Fill it.
	chunk := pseudoRandom(64<<10, 6)
	var written int64
	var werr error
	m.Within(t, time.Minute, "write until full", func() {
		f, err := os.Create(m.Path("fill.bin"))
		if err != nil {
			werr = err
			return
		}
		for written < 4<<20 {
			n, err := f.Write(chunk)
			written += int64(n)
			if err != nil {
				werr = err
				break
			}
		}
		if err := f.Close(); werr == nil {
			werr = err
		}
	})
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 4 MiB to a 2 MiB backing filesystem: %v after %d bytes, want ENOSPC", werr, written)
	}
	t.Logf("ENOSPC after %d bytes", written)
	// What was written is there, byte for byte.
	got, err := os.ReadFile(m.Backing("fill.bin"))
	mustDo(t, err)
	if int64(len(got)) != written {
		t.Errorf("fill.bin holds %d bytes, the writer was told %d", len(got), written)
	}
	for off := 0; off < len(got); off += len(chunk) {
		if !bytes.Equal(got[off:min(off+len(chunk), len(got))], chunk[:min(len(chunk), len(got)-off)]) {
			t.Fatalf("fill.bin differs at %d", off)
		}
	}
	// The rest of the mount is unharmed.
	m.Within(t, time.Minute, "read with the disk full", func() { got, err = os.ReadFile(m.Path("keep.bin")) })
	if err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("keep.bin with the disk full: %v (%d bytes)", err, len(got))
	}
	m.Within(t, time.Minute, "more writes with the disk full", func() {
		if err := os.WriteFile(m.Path("more.bin"), chunk, 0o644); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("another write with the disk full: %v, want ENOSPC", err)
		}
		if _, err := os.Stat(m.Path("keep.bin")); err != nil {
			t.Errorf("stat with the disk full: %v", err)
		}
		if _, err := os.ReadDir(m.Target); err != nil {
			t.Errorf("readdir with the disk full: %v", err)
		}
	})
	// Out of inodes too.
	m.Within(t, time.Minute, "out of inodes", func() {
		mustDo(t, os.Remove(m.Path("more.bin")))
		var ierr error
		for i := 0; i < 100 && ierr == nil; i++ {
			ierr = os.Mkdir(m.Path(fmt.Sprintf("d%03d", i)), 0o755)
		}
		if !errors.Is(ierr, syscall.ENOSPC) {
			t.Errorf("mkdir until out of inodes: %v, want ENOSPC", ierr)
		}
	})
	// Free space: everything works again, once the space is back. A
	// scan after fill.bin's write may still read it: its blocks come back
	// when that scan lets go of it (TestFaultSpaceFreedAfterRemove).
	m.Within(t, time.Minute, "freeing space", func() {
		mustDo(t, os.Remove(m.Path("fill.bin")))
		for i := 0; i < 100; i++ {
			os.Remove(m.Path(fmt.Sprintf("d%03d", i)))
		}
	})
	eventually(t, 30*time.Second, "the space of fill.bin back in the backing filesystem", func() bool {
		var s unix.Statfs_t
		mustDo(t, unix.Statfs(src, &s))
		return int64(s.Bavail)*int64(s.Bsize) >= 1<<20
	})
	m.Within(t, time.Minute, "after freeing space", func() {
		data := pseudoRandom(500<<10, 7)
		mustDo(t, os.WriteFile(m.Path("after.bin"), data, 0o644))
		got, err := os.ReadFile(m.Path("after.bin"))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("write and read after freeing space: %v", err)
		}
	})
	if got, err := os.ReadFile(m.Backing("keep.bin")); err != nil || !bytes.Equal(got, keep) {
		t.Errorf("keep.bin in the backing directory changed: %v", err)
	}
}

// TestFaultSIGTERMBusy: SIGTERM while files are open through the mount,
// one being written, and an open waiting for a scan that clamd will not
// finish (a proxy holds it). clamfuse unmounts (lazily, since the mount is
// busy) and exits 0 within seconds; the open waiting for the scan gets
// ECONNABORTED (the kernel's answer to a request pending when the
// connection ends) and the holders of open files ENOTCONN, not a hang;
// what was written and closed before is in the backing directory, and
// the bytes written through the file still open too.
func TestFaultSIGTERMBusy(t *testing.T) {
	t.Parallel() // mostly waits: for timeouts, for a busy mount
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", proxy.Address(), "--timeout", "60s"}})
	mustDo(t, os.WriteFile(m.Backing("pending.bin"), pseudoRandom(64<<10, 9), 0o644))
	mustDo(t, os.WriteFile(m.Backing("small.txt"), []byte("small"), 0o644))
	saved := []byte("written and closed before the signal\n")
	mustDo(t, os.WriteFile(m.Path("saved.txt"), saved, 0o644))
	reader, err := os.Open(m.Path("small.txt"))
	mustDo(t, err)
	defer reader.Close()
	// Both scans so far (saved.txt's after its write, small.txt's at its
	// open) have reached clamd; from now on scans wait.
	eventually(t, logBound, "the scans of saved.txt and small.txt", func() bool { return proxy.Scans() == 2 })
	proxy.Hold()
	writer, err := os.Create(m.Path("open-writer.txt"))
	mustDo(t, err)
	defer writer.Close()
	_, err = writer.Write([]byte("partial"))
	mustDo(t, err)

	done := make(chan error, 1)
	go func() {
		f, err := os.Open(m.Path("pending.bin"))
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	if s := proxy.Next(t, scanBound); s.Path != m.Backing("pending.bin") {
		t.Fatalf("held a scan of %s; want pending.bin's", s.Path)
	}
	// The open now waits for a scan that will not end.
	mustDo(t, m.Signal(syscall.SIGTERM))
	code, err := m.ExitCode(20 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("exit after SIGTERM with open files and a scan in flight: %d, %v; want 0\n%s", code, err, m.Log.String())
	}
	select {
	case err := <-done:
		if !errors.Is(err, syscall.ECONNABORTED) {
			t.Errorf("the open waiting for a scan when clamfuse exited: %v; want ECONNABORTED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the open waiting for a scan still blocked 10s after clamfuse exited")
	}
	// small.txt, small and read only, is open in cached mode even with
	// passthrough (passthroughMinRead): its reads come to clamfuse, but
	// for the bytes its open's scan judged and stored in the kernel's
	// page cache, which the kernel serves itself. (A descriptor in
	// passthrough mode would outlive clamfuse: README, Passthrough.)
	buf := make([]byte, 10)
	if k, err := unix.Read(int(reader.Fd()), buf); !errors.Is(err, syscall.ENOTCONN) && (err != nil || string(buf[:k]) != "small") {
		t.Errorf("read from a file held open across the exit: %v, %q; want ENOTCONN, or the bytes judged at its open", err, buf[:max(k, 0)])
	}
	if mounttest.IsFuseMount(m.Target) {
		t.Errorf("%s still mounted after clamfuse exited", m.Target)
	}
	if got, err := os.ReadFile(m.Backing("saved.txt")); err != nil || !bytes.Equal(got, saved) {
		t.Errorf("saved.txt in the backing directory: %q, %v", got, err)
	}
	if got, err := os.ReadFile(m.Backing("open-writer.txt")); err != nil || string(got) != "partial" {
		t.Errorf("bytes written through a file still open at the exit: %q, %v", got, err)
	}
	m.WaitLogLines(t, 5*time.Second, "signal received")
	m.WaitLogLines(t, 5*time.Second, "level=WARN", "files still open on the detached mount")
}

// TestFaultKilledAndRestarted: clamfuse killed with SIGKILL leaves a dead
// mount (ENOTCONN); clamfuse started again on the same mountpoint clears
// it, says so in its log, and serves.
func TestFaultKilledAndRestarted(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	args := []string{"--clamd", c.Address(), "--timeout", "30s"}
	m1 := mounttest.Start(t, mounttest.Options{Args: args})
	data := []byte("survives the crash\n")
	mustDo(t, os.WriteFile(m1.Path("f.txt"), data, 0o644))
	mustDo(t, m1.Cmd.Process.Kill())
	select {
	case <-m1.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("clamfuse did not die on SIGKILL")
	}
	var st unix.Stat_t
	if err := unix.Stat(m1.Target, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the mountpoint after SIGKILL: %v, want ENOTCONN (a dead mount)", err)
	}
	m2 := mounttest.Start(t, mounttest.Options{Source: m1.Source, Target: m1.Target, Args: args, NoWait: true})
	m2.WaitLogLines(t, 20*time.Second, "level=WARN", "cleared a dead FUSE mount", "target="+m1.Target)
	m2.WaitLogLines(t, 20*time.Second, "msg=mounted")
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := os.ReadFile(m2.Path("f.txt"))
		if err == nil {
			if !bytes.Equal(got, data) {
				t.Fatalf("f.txt after the restart: %q", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("f.txt after the restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(mounttest.MountsOn(t, m1.Target)); n != 1 {
		t.Errorf("%d mounts on %s after the restart, want 1", n, m1.Target)
	}
}

// TestFaultKilledAndRestartedAtOnce (issue #10, item 7): clamfuse killed
// with SIGKILL and started again at once, as systemd's Restart= does,
// several times in a row, with an attribute timeout long enough that the
// kernel answers a stat of the dead mount's root from its cache: each
// restart must find the dead mount (statfs), clear it, and serve.
func TestFaultKilledAndRestartedAtOnce(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	cfg := "[mount]\nattr_timeout = \"1h\"\n"
	args := []string{"--clamd", c.Address(), "--timeout", "30s"}
	m := startChecked(t, mounttest.Options{Config: cfg, Args: args})
	data := []byte("survives every crash\n")
	mustDo(t, os.WriteFile(m.Path("f.txt"), data, 0o644))
	for round := range 4 {
		var st unix.Stat_t
		mustDo(t, unix.Stat(m.Target, &st)) // the kernel caches the root's attributes
		mustDo(t, m.Cmd.Process.Kill())
		select {
		case <-m.Exited():
		case <-time.After(10 * time.Second):
			t.Fatal("clamfuse did not die on SIGKILL")
		}
		killed := time.Now()
		if err := unix.Stat(m.Target, &st); err != nil {
			t.Logf("round %d: stat of the dead mount: %v (not answered from the cache)", round, err)
		}
		next := startChecked(t, mounttest.Options{Config: cfg, Source: m.Source, Target: m.Target, Args: args, NoWait: true})
		if gap := time.Since(killed); gap > 500*time.Millisecond {
			t.Logf("round %d: restarted %v after the kill (slow machine), not within 0.5 s", round, gap)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(next.Log.String(), "msg=mounted") {
			select {
			case <-next.Exited():
				code, _ := next.ExitCode(time.Second)
				t.Fatalf("round %d: clamfuse restarted right after a crash exited %d:\n%s", round, code, next.Log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: not mounted after 20 s:\n%s", round, next.Log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(next.Log.String(), "cleared a dead FUSE mount") {
			t.Errorf("round %d: the restart did not say it cleared the dead mount:\n%s", round, next.Log.String())
		}
		m = next
		var got []byte
		var err error
		m.Within(t, time.Minute, "read after the restart", func() {
			deadline := time.Now().Add(20 * time.Second)
			for {
				if got, err = os.ReadFile(m.Path("f.txt")); err == nil || time.Now().After(deadline) {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round %d: f.txt after the restart: %q %v", round, got, err)
		}
		if n := len(mounttest.MountsOn(t, m.Target)); n != 1 {
			t.Errorf("round %d: %d mounts on %s after the restart, want 1", round, n, m.Target)
		}
	}
}

// TestFaultUnmountWhileOpen: fusermount3 -u on a mount with a file open
// fails (busy) and changes nothing; a lazy fusermount3 -u -z detaches it,
// the open file keeps working, and clamfuse exits 0 once it is closed.
func TestFaultUnmountWhileOpen(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", c.Address(), "--timeout", "30s"}})
	data := []byte("held open across an unmount\n")
	mustDo(t, os.WriteFile(m.Backing("f.txt"), data, 0o644))
	f, err := os.OpenFile(m.Path("f.txt"), os.O_RDWR, 0)
	mustDo(t, err)
	defer f.Close()

	out, err := exec.Command("fusermount3", "-u", m.Target).CombinedOutput()
	if err == nil {
		t.Fatalf("fusermount3 -u of a busy mount succeeded: %s", out)
	}
	t.Logf("fusermount3 -u on a busy mount: %v: %s", err, bytes.TrimSpace(out))
	if !m.Mounted() {
		t.Fatal("the mount is gone after a failed fusermount3 -u")
	}
	if err := unix.Unmount(m.Target, 0); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("umount of a busy mount: %v, want EBUSY", err)
	}
	m.Within(t, time.Minute, "use after a failed unmount", func() {
		if got, err := os.ReadFile(m.Path("f.txt")); err != nil || !bytes.Equal(got, data) {
			t.Errorf("read after a failed unmount: %q %v", got, err)
		}
	})

	out, err = exec.Command("fusermount3", "-u", "-z", m.Target).CombinedOutput()
	if err != nil {
		t.Fatalf("fusermount3 -u -z: %v: %s", err, out)
	}
	if m.Mounted() {
		t.Fatal("still mounted after a lazy unmount")
	}
	// The open file still works: the connection lives until it closes.
	buf := make([]byte, len(data))
	var n int
	m.Within(t, time.Minute, "read after a lazy unmount", func() { n, err = f.ReadAt(buf, 0) })
	if err != nil || !bytes.Equal(buf[:n], data) {
		t.Errorf("read from a file held across a lazy unmount: %q %v", buf[:n], err)
	}
	m.Within(t, time.Minute, "write after a lazy unmount", func() { _, err = f.WriteAt([]byte("HELD"), 0) })
	if err != nil {
		t.Errorf("write to a file held across a lazy unmount: %v", err)
	}
	// The read and write just served prove clamfuse still runs.
	select {
	case <-m.Exited():
		t.Fatal("clamfuse exited while a file was still open on the detached mount")
	default:
	}
	mustDo(t, f.Close())
	code, err := m.ExitCode(20 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("clamfuse after the last file on a detached mount closed: exit %d, %v; want 0", code, err)
	}
	if got, err := os.ReadFile(m.Backing("f.txt")); err != nil || !bytes.HasPrefix(got, []byte("HELD")) {
		t.Errorf("f.txt after the lazy unmount: %q %v; the write through the held file is lost", got, err)
	}
	m.WaitLogLines(t, 5*time.Second, "unmounted")
}

// TestFaultConnectionAborted: an abort through fusectl ends clamfuse.
// Of a mount still mounted, it is an error: clamfuse exits non-zero
// (systemd's Restart=on-failure then starts it again), naming the mount,
// and leaves the dead mount in place, failing every access (ENOTCONN)
// rather than exposing the directory under it, until a new clamfuse
// clears it. Of a mount already detached (umount -l while a file was
// open), it is the unmount's end: exit 0 (the kernel itself sometimes
// ends such a connection with ECONNABORTED when its last file closes).
func TestFaultConnectionAborted(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	for _, tc := range []struct {
		name     string
		detached bool
	}{
		{"mounted", false},
		{"detached", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", c.Address()}})
			data := []byte("clean\n")
			mustDo(t, os.WriteFile(m.Backing("f.txt"), data, 0o644))
			f, err := os.Open(m.Path("f.txt"))
			mustDo(t, err)
			defer f.Close()
			if tc.detached {
				mustDo(t, unix.Unmount(m.Target, unix.MNT_DETACH))
				mustDo(t, m.AbortDetached())
			} else {
				m.Abort()
			}
			code, err := m.ExitCode(20 * time.Second)
			if err != nil {
				t.Fatalf("clamfuse after the abort: %v", err)
			}
			if tc.detached {
				if code != 0 {
					t.Fatalf("clamfuse after an abort of a detached mount: exit %d, want 0", code)
				}
				m.WaitLogLines(t, 5*time.Second, "unmounted")
				return
			}
			if code == 0 {
				t.Fatalf("clamfuse after an abort of a live mount: exit 0, want an error")
			}
			m.WaitLogLines(t, 5*time.Second, "serving "+m.Target, "connection was aborted")
			if !m.Mounted() {
				t.Fatal("the aborted mount is gone: the directory under it is exposed")
			}
			if _, err := os.Stat(m.Path("f.txt")); !errors.Is(err, syscall.ENOTCONN) {
				t.Errorf("stat on the aborted mount: %v, want ENOTCONN", err)
			}
			// What Restart=on-failure does next: a new clamfuse clears the
			// dead mount and serves again.
			m2 := mounttest.Start(t, mounttest.Options{Source: m.Source, Target: m.Target,
				Args: []string{"--clamd", c.Address()}, NoWait: true})
			m2.WaitLogLines(t, 20*time.Second, "level=WARN", "cleared a dead FUSE mount", "target="+m.Target)
			m2.WaitLogLines(t, 20*time.Second, "msg=mounted")
			var got []byte
			m2.Within(t, time.Minute, "read after the restart", func() { got, err = os.ReadFile(m2.Path("f.txt")) })
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("read after the restart: %q %v", got, err)
			}
		})
	}
}

// TestFaultSpaceFreedAfterRemove: deleting a file through the mount gives
// its space back to the backing filesystem (no descriptor of clamfuse
// keeps a deleted file alive for long), so a writer that fills the disk
// can make room again. The space may come back a moment after the
// unlink returns, while a scan of the file just written still reads
// it; the delay is logged.
func TestFaultSpaceFreedAfterRemove(t *testing.T) {
	mounttest.Require(t)
	src := mountTmpfs(t, "size=10m,mode=0755")
	c := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Source: src, Args: []string{"--clamd", c.Address(), "--timeout", "30s"}})
	free := func() int64 {
		var s unix.Statfs_t
		mustDo(t, unix.Statfs(src, &s))
		return int64(s.Bavail) * int64(s.Bsize)
	}
	empty := free()
	data := pseudoRandom(7<<20, 8)
	var delays []time.Duration
	for round := range 8 {
		m.Within(t, time.Minute, "write and remove", func() {
			mustDo(t, os.WriteFile(m.Path("big"), data, 0o644))
			if round%2 == 1 {
				// Read it too: an open with a scan in between.
				if _, err := os.ReadFile(m.Path("big")); err != nil {
					t.Errorf("read: %v", err)
				}
			}
			mustDo(t, os.Remove(m.Path("big")))
		})
		removed := time.Now()
		for free() < empty-(1<<20) {
			if time.Since(removed) > 10*time.Second {
				t.Fatalf("round %d: the space of a file removed through the mount is still in use after 10s (%d of %d bytes free)", round, free(), empty)
			}
			time.Sleep(time.Millisecond)
		}
		delays = append(delays, time.Since(removed).Round(100*time.Microsecond))
	}
	t.Logf("space back after the unlink returned: %v", delays)
}
