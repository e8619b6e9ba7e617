package test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// denyBound is how long a denial may take with clamd.timeout = 2s or
// --timeout 1s: the timeout, the gate's grace and slack for a loaded
// machine. It says "returned", not "how fast".
const denyBound = 15 * time.Second

// TestClamdDownFailsClosed: with clamd gone, a file with a cached clean
// verdict still reads, an uncached one is denied (within the timeout
// bound, logged), and once clamd is back the same file reads without a
// remount: errors are never cached.
func TestClamdDownFailsClosed(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = %q
timeout = "2s"
`, c.Address())})
	cached, uncached := pseudoRandom(100<<10, 131), pseudoRandom(100<<10, 132)
	putFile(t, m.Backing("cached.bin"), cached)
	putFile(t, m.Backing("uncached.bin"), uncached)
	// A verdict is cached once the file's times are old enough to show
	// a later change (cache/racy.go).
	waitTimesOld(t, m.Backing("cached.bin"), fineSettle)
	wantSame(t, "cached.bin with clamd up", readVia(t, m, m.Path("cached.bin")), cached)

	mustDo(t, c.Stop())
	wantSame(t, "cached.bin with clamd down", readVia(t, m, m.Path("cached.bin")), cached)
	for range 2 {
		var err error
		m.Within(t, denyBound, "open of an unscanned file with clamd down", func() {
			_, err = os.ReadFile(m.Path("uncached.bin"))
		})
		if !errors.Is(err, syscall.EACCES) {
			t.Fatalf("open of an unscanned file with clamd down: %v, want EACCES", err)
		}
	}
	m.WaitLogLines(t, logBound, "level=WARN", "file denied without a verdict", "path=uncached.bin ", "reason=error")

	mustDo(t, c.Restart())
	wantSame(t, "uncached.bin after clamd restart", readVia(t, m, m.Path("uncached.bin")), uncached)
	// And detections work again.
	putFile(t, m.Backing("eicar.com"), clamdtest.EICAR())
	wantEACCES(t, m, m.Path("eicar.com"))
}

// TestOnErrorAllow: with on_error = "allow", a file that cannot be
// scanned because clamd is down is served, and a WARN line says so.
func TestOnErrorAllow(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf(`
[clamd]
address = %q
timeout = "2s"

[scan]
on_error = "allow"
`, c.Address())})
	data := pseudoRandom(100<<10, 141)
	putFile(t, m.Backing("unscanned.bin"), data)
	mustDo(t, c.Stop())
	var got []byte
	var err error
	m.Within(t, denyBound, "open with clamd down and on_error = allow", func() {
		got, err = os.ReadFile(m.Path("unscanned.bin"))
	})
	if err != nil {
		t.Fatalf("read with clamd down and on_error = allow: %v", err)
	}
	wantSame(t, "unscanned.bin", got, data)
	m.WaitLogLines(t, logBound, "level=WARN", "file not scanned, allowed by policy", "path=unscanned.bin ", "reason=error")
}

// TestClamdNeverAnswers: a clamd that accepts connections and never
// replies cannot hang an open: it is denied within the timeout bound, and
// the mount keeps working (other operations, further denials, more
// concurrent opens than scan slots) without a hang.
func TestClamdNeverAnswers(t *testing.T) {
	t.Parallel() // mostly waits: for timeouts, for a busy mount
	mounttest.Require(t)
	for _, tc := range []struct {
		name  string
		reads bool // drains what clamfuse sends, or lets it back up
		size  int
	}{
		{"reads the stream, never replies", true, 64 << 10},
		{"never reads, never replies", false, 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := silentClamd(t, tc.reads)
			m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", addr, "--timeout", "1s"}})
			for i := range 8 {
				putFile(t, m.Backing(fmt.Sprintf("f%d", i)), pseudoRandom(tc.size, uint64(150+i)))
			}
			putFile(t, m.Backing("empty"), nil)

			var err error
			m.Within(t, denyBound, "open with a silent clamd", func() {
				_, err = os.ReadFile(m.Path("f0"))
			})
			if !errors.Is(err, syscall.EACCES) {
				t.Fatalf("open with a silent clamd: %v, want EACCES", err)
			}
			m.WaitLogLines(t, logBound, "level=WARN", "file denied without a verdict", "path=f0 ")

			// More concurrent opens than scan slots (max_concurrent 4).
			errs := make([]error, 7)
			m.Within(t, denyBound, "7 concurrent opens with a silent clamd", func() {
				var wg sync.WaitGroup
				for i := range errs {
					wg.Go(func() { _, errs[i] = os.ReadFile(m.Path(fmt.Sprintf("f%d", i+1))) })
				}
				wg.Wait()
			})
			for i, err := range errs {
				if !errors.Is(err, syscall.EACCES) {
					t.Errorf("concurrent open %d: %v, want EACCES", i+1, err)
				}
			}

			// The rest of the filesystem is unaffected.
			m.Within(t, denyBound, "other operations after the denials", func() {
				if ents, err := os.ReadDir(m.Target); err != nil || len(ents) != 9 {
					t.Errorf("readdir: %d entries, %v; want 9", len(ents), err)
				}
				if b, err := os.ReadFile(m.Path("empty")); err != nil || len(b) != 0 {
					t.Errorf("read of an empty file (nothing to scan): %q, %v", b, err)
				}
				if err := os.WriteFile(m.Path("new"), []byte("still writable"), 0o644); err != nil {
					t.Errorf("write: %v", err)
				}
				_, err = os.ReadFile(m.Path("f0"))
			})
			if !errors.Is(err, syscall.EACCES) {
				t.Fatalf("second open of f0: %v, want EACCES", err)
			}
			wantSame(t, "backing of a file written meanwhile", slurp(t, m.Backing("new")), []byte("still writable"))
		})
	}
}

// silentClamd listens on a unix socket, accepts every connection and never
// answers; with reads it drains what it is sent, else it reads nothing.
// It returns the address for --clamd, and hangup, which closes every
// connection accepted so far and every later one at once (scans then fail
// rather than wait).
func silentClamd(t *testing.T, reads bool) (addr string, hangup func()) {
	s := newSilentClamd(t, reads)
	return s.addr, s.hangup
}

// silent is silentClamd's server. With reads, it also counts the scans
// it is sent (FILDES or INSTREAM; not the VERSION checks), and those
// whose connection the client closed.
type silent struct {
	addr   string
	hangup func()

	mu      sync.Mutex // guards scans and dropped
	scans   int
	dropped int
}

// Scans is how many scans reached the server so far.
func (s *silent) Scans() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scans
}

// Dropped is how many scans the client gave up so far, closing the
// connection (the server never does before hangup).
func (s *silent) Dropped() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// scanHead is how long a head isScan needs.
const scanHead = len("zFILDES\x00")

// sessionHead starts a clamd session, before the first request.
const sessionHead = "zIDSESSION\x00"

// isScan says whether head, the first scanHead bytes a client sent, begin
// a scan: zFILDES or zINSTREAM.
func isScan(head []byte) bool {
	return len(head) == scanHead && (string(head) == "zFILDES\x00" || string(head) == "zINSTREAM"[:scanHead])
}

func newSilentClamd(t *testing.T, reads bool) *silent {
	t.Helper()
	dir, err := os.MkdirTemp("", "silentclamd") // short: sun_path is 108 bytes
	mustDo(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "clamd.sock")
	ln, err := net.Listen("unix", sock)
	mustDo(t, err)
	s := &silent{addr: "unix:" + sock}
	var mu sync.Mutex // guards conns and hungUp
	var conns []net.Conn
	hungUp := false
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if hungUp {
				c.Close()
				mu.Unlock()
				continue
			}
			conns = append(conns, c)
			mu.Unlock()
			if reads {
				wg.Go(func() {
					head := make([]byte, scanHead)
					k, err := io.ReadFull(c, head)
					if string(head[:k]) == sessionHead[:scanHead] {
						// A session (clamav.Options.Sessions): its first
						// request follows.
						rest := make([]byte, len(sessionHead)-scanHead)
						if _, err = io.ReadFull(c, rest); err == nil {
							k, err = io.ReadFull(c, head)
						}
					}
					scan := isScan(head[:k])
					if scan {
						s.mu.Lock()
						s.scans++
						s.mu.Unlock()
					}
					if err == nil {
						// Until EOF (the client closed), or an error (hangup).
						_, err = io.Copy(io.Discard, c)
					}
					if scan && err == nil {
						s.mu.Lock()
						s.dropped++
						s.mu.Unlock()
					}
				})
			}
		}
	})
	s.hangup = func() {
		mu.Lock()
		defer mu.Unlock()
		hungUp = true
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(func() {
		ln.Close()
		s.hangup()
		wg.Wait()
	})
	return s
}

// TestWrittenAgainCancelsScan: a file written through the mount is
// scanned in the background once closed; written again through the mount
// before that scan ends, the scan is cancelled at once, its connection to
// clamd closed (not left to clamd.timeout), and it starts again when the
// writer closes the file.
func TestWrittenAgainCancelsScan(t *testing.T) {
	t.Parallel() // mostly waits: for timeouts, for a busy mount
	mounttest.Require(t)
	clamd := newSilentClamd(t, true)
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", clamd.addr, "--timeout", "5m", "--log-level", "debug"}})
	data := pseudoRandom(256<<10, 401)
	var err error
	m.Within(t, denyBound, "writing a file through the mount", func() { err = os.WriteFile(m.Path("download.bin"), data, 0o644) })
	mustDo(t, err)
	m.Within(t, denyBound, "the scan after write reaching clamd", func() {
		for clamd.Scans() < 1 {
			time.Sleep(10 * time.Millisecond)
		}
	})

	f, err := os.OpenFile(m.Path("download.bin"), os.O_WRONLY, 0)
	mustDo(t, err)
	defer f.Close()
	m.Within(t, denyBound, "writing again while the scan after write runs", func() {
		if _, err = f.WriteAt([]byte("more bytes"), int64(len(data))); err != nil {
			return
		}
		for clamd.Dropped() < 1 {
			time.Sleep(10 * time.Millisecond)
		}
	})
	mustDo(t, err)
	if n := clamd.Scans(); n != 1 {
		t.Errorf("%d scans reached clamd while the file was open for writing; want 1", n)
	}
	m.WaitLogLines(t, logBound, "level=DEBUG", "scan after write cancelled: written again", "path=download.bin")

	mustDo(t, f.Close())
	m.Within(t, denyBound, "the scan after the second write reaching clamd", func() {
		for clamd.Scans() < 2 {
			time.Sleep(10 * time.Millisecond)
		}
	})
	if n := clamd.Dropped(); n != 1 {
		t.Errorf("clamfuse closed %d connections to clamd; want only the cancelled scan's", n)
	}
	clamd.hangup()
	wantSame(t, "backing file", slurp(t, m.Backing("download.bin")), append(data, "more bytes"...))
}

// TestBlockedOpensDoNotStallTheMount: many more opens waiting for a scan
// than the server has request readers (fs/internal/fusefs) leave every
// other operation working, and all of them are answered once clamd goes.
func TestBlockedOpensDoNotStallTheMount(t *testing.T) {
	t.Parallel() // mostly waits: for timeouts, for a busy mount
	mounttest.Require(t)
	addr, hangup := silentClamd(t, true)
	m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", addr, "--timeout", "5m"}})
	const blocked = 40 // > fusefs.maxReaders (16)
	for i := range blocked {
		putFile(t, m.Backing(fmt.Sprintf("f%d", i)), pseudoRandom(4<<10, uint64(300+i)))
	}
	putFile(t, m.Backing("empty"), nil)

	var done atomic.Int32
	errs := make([]error, blocked)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = os.ReadFile(m.Path(fmt.Sprintf("f%d", i)))
			done.Add(1)
		})
	}
	// Wait until all of them reached the server: 4 scans in flight (the
	// default max_concurrent) and the rest queued behind them.
	// The count read is the one judged: fusectl's waiting counts every
	// request in flight, and one of another kind (a RELEASE, a LOOKUP)
	// may be answered between two reads.
	waiting := 0
	m.Within(t, denyBound, "40 opens reaching the server", func() {
		for waiting = m.Waiting(); waiting < blocked && done.Load() == 0; waiting = m.Waiting() {
			time.Sleep(10 * time.Millisecond)
		}
	})
	if n := done.Load(); n != 0 || waiting < blocked {
		t.Fatalf("fusectl waiting = %d with %d opens returned, want at least %d open requests pending and none returned", waiting, n, blocked)
	}

	m.Within(t, denyBound, "other operations while 40 opens wait for clamd", func() {
		if ents, err := os.ReadDir(m.Target); err != nil || len(ents) != blocked+1 {
			t.Errorf("readdir: %d entries, %v; want %d", len(ents), err, blocked+1)
		}
		if b, err := os.ReadFile(m.Path("empty")); err != nil || len(b) != 0 {
			t.Errorf("read of an empty file (nothing to scan): %q, %v", b, err)
		}
		if err := os.WriteFile(m.Path("new"), []byte("still writable"), 0o644); err != nil {
			t.Errorf("write: %v", err)
		}
	})
	if n := done.Load(); n != 0 {
		t.Fatalf("%d of the %d opens returned before clamd hung up (timeout 5m)", n, blocked)
	}

	hangup()
	m.Within(t, denyBound, "the 40 opens after clamd hung up", wg.Wait)
	for i, err := range errs {
		if !errors.Is(err, syscall.EACCES) {
			t.Errorf("open %d: %v, want EACCES", i, err)
		}
	}
	wantSame(t, "backing of a file written meanwhile", slurp(t, m.Backing("new")), []byte("still writable"))
}

// TestStopUnmounts: clamfuse ends with exit code 0 and leaves no mount
// behind when told to stop by a signal (also with a file held open, when
// it detaches lazily) or when unmounted from outside.
func TestStopUnmounts(t *testing.T) {
	t.Parallel() // mostly waits: for timeouts, for a busy mount
	mounttest.Require(t)
	for _, tc := range []struct {
		name     string
		holdOpen bool
		stop     func(t *testing.T, m *mounttest.Mount)
	}{
		{"SIGTERM", false, signalStop(syscall.SIGTERM)},
		{"SIGINT", false, signalStop(syscall.SIGINT)},
		{"SIGTERM with a file open", true, signalStop(syscall.SIGTERM)},
		{"fusermount3 -u", false, commandStop("fusermount3", "-u")},
		{"umount", false, commandStop("umount")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mounttest.Start(t, mounttest.Options{Args: []string{"--clamd", "unix:/nonexistent/clamd.sock"}})
			putFile(t, m.Backing("empty"), nil)
			if tc.holdOpen {
				f, err := os.Open(m.Path("empty"))
				mustDo(t, err)
				defer f.Close()
			}
			tc.stop(t, m)
			code, err := m.ExitCode(30 * time.Second)
			if err != nil || code != 0 {
				t.Fatalf("clamfuse exit: %d, %v; want 0", code, err)
			}
			if mounttest.IsFuseMount(m.Target) {
				t.Fatalf("%s is still a FUSE mount after clamfuse exited", m.Target)
			}
		})
	}
}

func signalStop(sig os.Signal) func(*testing.T, *mounttest.Mount) {
	return func(t *testing.T, m *mounttest.Mount) { mustDo(t, m.Signal(sig)) }
}

func commandStop(name string, args ...string) func(*testing.T, *mounttest.Mount) {
	return func(t *testing.T, m *mounttest.Mount) {
		out, err := exec.Command(name, append(args, m.Target)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
}
