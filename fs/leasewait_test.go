package fs

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
)

// TestWriteOpenDuringLeasedScan: clamd judges a small file itself under
// a read lease (cache/lease.go), and meanwhile another user opens it for
// writing, or truncates it, through the mount. clamfuse opens backing
// files with O_NONBLOCK (a FIFO swapped in must not block it), and an
// O_NONBLOCK open that breaks a lease fails with EWOULDBLOCK instead of
// waiting for it to be given up: any user who may read a file could so
// make its writers' opens fail, and scans of files being written make
// them fail by themselves. The writer must go on as a plain open does,
// at once, clamfuse giving its lease up on the break.
func TestWriteOpenDuringLeasedScan(t *testing.T) {
	for _, tt := range []struct {
		name   string
		script string // run as nobody; F is the file in the mount
	}{
		{"opened for writing", `dd of="$F" conv=notrunc count=0 status=none`},
		{"written", `printf x | dd of="$F" conv=notrunc status=none`},
		{"truncated by an open", `: > "$F"`},
		{"truncated by coreutils", `truncate -s 1 "$F"`}, // O_NONBLOCK, as touch
		{"opened with O_TRUNC, O_NONBLOCK", `dd if=/dev/null of="$F" oflag=nonblock status=none`},
		{"truncated by path", `perl -e 'truncate($ENV{F}, 1) or die "truncate: $!\n"'`}, // truncate(2): a SETATTR
	} {
		t.Run(tt.name, func(t *testing.T) {
			mo := MountOptions{AllowOther: true}
			backing, m, _, c := testMountClamd(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: 1 << 20})
			openToAll(t, backing, m)
			p := filepath.Join(backing, "f")
			mustDo(t, os.WriteFile(p, []byte(strings.Repeat("clean ", 1000)), 0o666))
			mustDo(t, os.Chmod(p, 0o666))
			var st unix.Stat_t
			mustDo(t, unix.Stat(p, &st))

			// clamd stopped: the scan of the open below holds its lease
			// until clamd goes on.
			pid := clamdPid(t, c.Dir)
			mustDo(t, syscall.Kill(pid, syscall.SIGSTOP))
			resumed := false
			resume := func() {
				if !resumed {
					resumed = true
					syscall.Kill(pid, syscall.SIGCONT)
				}
			}
			t.Cleanup(resume)
			opened := make(chan error, 1)
			go func() {
				// Not os.Open: it would register the FUSE file with
				// epoll, whose FUSE POLL this process must answer,
				// from epoll_ctl, which holds its runtime processor
				// (see dircache_test.go); it once hung so in CI.
				fd, err := unix.Open(filepath.Join(m.Target, "f"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.Close(fd)
				}
				opened <- err
			}()
			waitLease(t, st.Ino)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", "-c", tt.script)
			cmd.Env = append(os.Environ(), "F="+filepath.Join(m.Target, "f"))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			resume()
			if err != nil {
				t.Errorf("%s, as nobody, while the file is scanned under a lease: %v: %s", tt.script, err, out)
			} else if took > 10*time.Second {
				t.Errorf("%s waited %v: the lease was not given up on the break", tt.script, took)
			}
			select {
			case err := <-opened:
				if err != nil {
					t.Errorf("the open whose scan held the lease: %v", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("the open whose scan held the lease did not end within a minute of clamd going on")
			}
		})
	}
}

// clamdPid reads the pid of the clamd whose directory is dir.
func clamdPid(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "clamd.pid"))
	mustDo(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	mustDo(t, err)
	return pid
}

// waitLease waits until this process holds a read lease on inode ino
// (/proc/locks), failing after a while.
func waitLease(t *testing.T, ino uint64) {
	t.Helper()
	pid, suffix := strconv.Itoa(os.Getpid()), ":"+strconv.FormatUint(ino, 10)
	for deadline := time.Now().Add(30 * time.Second); ; {
		f, err := os.Open("/proc/locks")
		mustDo(t, err)
		for sc := bufio.NewScanner(f); sc.Scan(); {
			fields := strings.Fields(sc.Text())
			if len(fields) > 5 && fields[1] == "LEASE" && fields[4] == pid && strings.HasSuffix(fields[5], suffix) {
				f.Close()
				return
			}
		}
		f.Close()
		if time.Now().After(deadline) {
			t.Fatal("no read lease on the file while its scan waits for clamd")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLeaseWaitsBounded: a user holds a read lease of their own on a file
// of theirs, ignores its break, and opens the file for writing through
// the mount many times at once. Each open that waits for the break holds
// a clamfuse thread, blocked in open(2), for up to lease-break-time: at
// most leaseWaitsPerUser of that user's opens wait, the others fail at
// once with EWOULDBLOCK; once the lease is gone the waiting ones go on.
func TestLeaseWaitsBounded(t *testing.T) {
	mo := MountOptions{AllowOther: true}
	backing, m, _, _ := testMountClamd(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour, Timeout: time.Minute})
	openToAll(t, backing, m)
	p := filepath.Join(backing, "f")
	mustDo(t, os.WriteFile(p, []byte("mine"), 0o644))
	mustDo(t, os.Chown(p, 65534, 65534))
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Setpgid: true}

	// F_SETLEASE is 1024, F_RDLCK 0; SIGIO ignored: the break is not
	// answered, and waits for lease-break-time or the holder's end.
	holder := exec.Command("perl", "-e", `$SIG{IO}="IGNORE"; open(F, "<", $ARGV[0]) or die "$!"; fcntl(F, 1024, 0) or die "F_SETLEASE: $!"; $|=1; print "held\n"; sleep 120`, p)
	holder.SysProcAttr = nobody
	out, err := holder.StdoutPipe()
	mustDo(t, err)
	holder.Stderr = os.Stderr
	mustDo(t, holder.Start())
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "held\n" {
		t.Fatalf("the lease holder: %q, %v", line, err)
	}

	const n = leaseWaitsPerUser + 8
	type result struct {
		err error
		out []byte
	}
	results := make(chan result, n)
	for range n {
		go func() {
			cmd := exec.Command("dd", "of="+filepath.Join(m.Target, "f"), "conv=notrunc", "count=0", "status=none")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			results <- result{err, out}
		}()
	}
	var failed, done int
	timeout := time.After(30 * time.Second)
	for failed < n-leaseWaitsPerUser {
		select {
		case r := <-results:
			done++
			if r.err == nil {
				t.Fatalf("an open for writing went on while the lease was held: %s", r.out)
			}
			if !strings.Contains(string(r.out), "Resource temporarily unavailable") {
				t.Fatalf("an open for writing: %v: %s; want EWOULDBLOCK", r.err, r.out)
			}
			failed++
		case <-timeout:
			t.Fatalf("%d opens failed at once; want %d (all but the %d that may wait)", failed, n-leaseWaitsPerUser, leaseWaitsPerUser)
		}
	}
	holder.Process.Kill()
	holder.Wait()
	for done < n {
		select {
		case r := <-results:
			done++
			if r.err != nil {
				t.Errorf("an open that waited for the lease: %v: %s; want it to go on once the lease is gone", r.err, r.out)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%d opens still wait a minute after the lease holder ended", n-done)
		}
	}
}
