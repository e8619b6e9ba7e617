package clamdtest

import (
	"bufio"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// instream scans data with INSTREAM on the clamd at socket and returns the
// reply without its terminator, e.g. "stream: OK".
func instream(socket string, data []byte) (string, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(conn, 1<<20)
	werr := func() error {
		if _, err := w.WriteString("zINSTREAM\x00"); err != nil {
			return err
		}
		const chunk = 1 << 20
		var hdr [4]byte
		for len(data) > 0 {
			n := min(len(data), chunk)
			binary.BigEndian.PutUint32(hdr[:], uint32(n))
			if _, err := w.Write(hdr[:]); err != nil {
				return err
			}
			if _, err := w.Write(data[:n]); err != nil {
				return err
			}
			data = data[n:]
		}
		binary.BigEndian.PutUint32(hdr[:], 0)
		if _, err := w.Write(hdr[:]); err != nil {
			return err
		}
		return w.Flush()
	}()
	// clamd may answer and hang up before it has read everything (size
	// limit exceeded): the reply is still there to read.
	reply, rerr := bufio.NewReader(conn).ReadString(0)
	if rerr != nil && !(errors.Is(rerr, io.EOF) && reply != "") {
		if werr != nil {
			return "", fmt.Errorf("write: %v; read: %v", werr, rerr)
		}
		return "", rerr
	}
	return strings.TrimSuffix(reply, "\x00"), nil
}

// randomBytes returns n reproducible random bytes.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'c', 'l', 'a', 'm'})
	_, _ = r.Read(b)
	return b
}

func TestTestData(t *testing.T) {
	eicar := EICAR()
	if len(eicar) != 68 {
		t.Errorf("len(EICAR()) = %d, want 68", len(eicar))
	}
	// The well-known MD5 of the EICAR test file.
	sum := md5.Sum(eicar)
	if got, want := hex.EncodeToString(sum[:]), "44d88612fea8a8f36de82e1278abb02f"; got != want {
		t.Errorf("md5(EICAR()) = %s, want %s", got, want)
	}
	m := string(Marker())
	if !strings.HasPrefix(m, "CLAMFUSE-TEST-MARKER-") || len(m) != len("CLAMFUSE-TEST-MARKER-")+32 {
		t.Errorf("Marker() = %q, want CLAMFUSE-TEST-MARKER- and 32 hex digits", m)
	}
	if _, err := hex.DecodeString(strings.TrimPrefix(m, "CLAMFUSE-TEST-MARKER-")); err != nil {
		t.Errorf("Marker() suffix is not hex: %v", err)
	}
	// Each call returns a fresh slice.
	EICAR()[0] = 0
	Marker()[0] = 0
	if EICAR()[0] != 'X' || Marker()[0] != 'C' {
		t.Error("EICAR/Marker share their backing array between calls")
	}
}

func TestScan(t *testing.T) {
	c := New(t, Options{})

	clamZip, err := os.ReadFile(ClamZipPath)
	if err != nil {
		t.Fatal(err)
	}
	const bigSize = 50 << 20
	markedBig := randomBytes(bigSize, 1)
	copy(markedBig[bigSize-100+17:], Marker()) // inside the last 100 bytes
	markedSmall := append(randomBytes(1000, 2), Marker()...)

	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"eicar", EICAR(), "stream: " + EICARSignature + " FOUND"},
		{"clam.zip", clamZip, "stream: " + ClamExeSignature + " FOUND"},
		{"marker at end of 50MiB", markedBig, "stream: " + MarkerSignature + " FOUND"},
		{"marker at end of 1000 bytes", markedSmall, "stream: " + MarkerSignature + " FOUND"},
		{"clean random 1MiB", randomBytes(1<<20, 3), "stream: OK"},
		{"clean random 50MiB", randomBytes(bigSize, 4), "stream: OK"},
		{"empty", nil, "stream: OK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := instream(c.Socket, tt.data)
			if err != nil {
				t.Fatalf("INSTREAM: %v", err)
			}
			if got != tt.want {
				t.Errorf("INSTREAM = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLimits pins the size limits Options set: AlertExceedsMax turns a file
// above MaxFileSize into a detection, and StreamMaxLength caps INSTREAM.
func TestLimits(t *testing.T) {
	c := New(t, Options{MaxFileSize: "1M", StreamMaxLength: "10M"})
	tests := []struct {
		name string
		size int
		want string
	}{
		{"below MaxFileSize", 1<<20 - 1, "stream: OK"},
		{"above MaxFileSize", 2 << 20, "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND"},
		{"above StreamMaxLength", 11 << 20, "INSTREAM size limit exceeded. ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := instream(c.Socket, randomBytes(tt.size, 5))
			if err != nil {
				t.Fatalf("INSTREAM: %v", err)
			}
			if got != tt.want {
				t.Errorf("INSTREAM of %d bytes = %q, want %q", tt.size, got, tt.want)
			}
		})
	}
}

func TestStopRestart(t *testing.T) {
	c := New(t, Options{})
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if reply, err := command(c.Socket, "PING"); err == nil {
		t.Errorf("PING after Stop = %q, want an error", reply)
	}
	if _, err := os.Stat(c.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Stop: %v, want it removed", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done() not closed after Stop")
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v, want nil", err)
	}

	if err := c.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if reply, err := command(c.Socket, "PING"); err != nil || reply != "PONG" {
		t.Errorf("PING after Restart = %q, %v; want PONG", reply, err)
	}
	if got, err := instream(c.Socket, EICAR()); err != nil || got != "stream: "+EICARSignature+" FOUND" {
		t.Errorf("INSTREAM after Restart = %q, %v", got, err)
	}
	// Restart of a running clamd stops it first.
	if err := c.Restart(); err != nil {
		t.Fatalf("Restart while running: %v", err)
	}
	if reply, err := command(c.Socket, "PING"); err != nil || reply != "PONG" {
		t.Errorf("PING after second Restart = %q, %v; want PONG", reply, err)
	}
}

func TestReload(t *testing.T) {
	c := New(t, Options{})
	body := []byte("clamfuse reload " + "test body 42")
	data := append(randomBytes(4096, 6), body...)
	const name = "Clamfuse.Test.Reload"

	if got, err := instream(c.Socket, data); err != nil || got != "stream: OK" {
		t.Fatalf("INSTREAM before the signature = %q, %v; want stream: OK", got, err)
	}
	if err := c.AddNDBSignature(name, hex.EncodeToString(body)); err != nil {
		t.Fatalf("AddNDBSignature: %v", err)
	}
	if got, err := instream(c.Socket, data); err != nil || got != "stream: OK" {
		t.Fatalf("INSTREAM before Reload = %q, %v; want stream: OK", got, err)
	}
	if err := c.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	want := "stream: " + name + ".UNOFFICIAL FOUND"
	if got, err := instream(c.Socket, data); err != nil || got != want {
		t.Fatalf("INSTREAM after Reload = %q, %v; want %q", got, err, want)
	}
	// The old signatures survive a reload.
	if got, err := instream(c.Socket, EICAR()); err != nil || got != "stream: "+EICARSignature+" FOUND" {
		t.Errorf("INSTREAM of EICAR after Reload = %q, %v", got, err)
	}
	// So does the added one across Restart.
	if err := c.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got, err := instream(c.Socket, data); err != nil || got != want {
		t.Errorf("INSTREAM after Restart = %q, %v; want %q", got, err, want)
	}

	// A broken database is reported, and clamd keeps serving the old one.
	if err := c.AddNDBSignature("Clamfuse.Test.Broken", "zz"); err != nil {
		t.Fatalf("AddNDBSignature: %v", err)
	}
	if err := c.Reload(); err == nil {
		t.Error("Reload of a broken database succeeded, want an error")
	}
	if got, err := instream(c.Socket, data); err != nil || got != want {
		t.Errorf("INSTREAM after failed Reload = %q, %v; want %q", got, err, want)
	}
}

func TestFindToolMissing(t *testing.T) {
	_, err := findTool("clamfuse-no-such-tool", "/nonexistent/clamfuse-no-such-tool")
	if !errors.Is(err, ErrNotInstalled) {
		t.Errorf("findTool of a missing program = %v, want ErrNotInstalled", err)
	}
}

func TestAddNDBSignatureRejects(t *testing.T) {
	c := &Clamd{DBDir: t.TempDir()}
	for _, tt := range []struct{ name, body string }{
		{"", "aa"},
		{"a:b", "aa"},
		{"a\nb", "aa"},
		{"ok", ""},
		{"ok", "aa:0"},
		{"ok", "aa\nbb"},
	} {
		if err := c.AddNDBSignature(tt.name, tt.body); err == nil {
			t.Errorf("AddNDBSignature(%q, %q) = nil, want an error", tt.name, tt.body)
		}
	}
}

func TestScanCount(t *testing.T) {
	c := New(t, Options{})
	inputs := [][]byte{EICAR(), randomBytes(100, 7), Marker(), nil}
	for _, in := range inputs {
		if _, err := instream(c.Socket, in); err != nil {
			t.Fatal(err)
		}
	}
	// clamd logs a verdict just after it replies: poll.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := c.ScanCount()
		if err != nil {
			t.Fatal(err)
		}
		if n == len(inputs) {
			break
		}
		if n > len(inputs) || time.Now().After(deadline) {
			t.Fatalf("ScanCount = %d, want %d; log:\n%s", n, len(inputs), c.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIsVerdictLine(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"Wed Nov 25 15:18:48 2026 -> instream(local): OK", true},
		{"Wed Nov 25 15:18:48 2026 -> instream(local): Clamfuse.Test.EICAR.UNOFFICIAL FOUND", true},
		{"Wed Nov 25 15:18:48 2026 -> /srv/a file: OK", true},
		{"instream(local): Heuristics.Limits.Exceeded.MaxFileSize FOUND", true},
		{"Wed Nov 25 15:18:44 2026 -> Loaded 3 signatures.", false},
		{"Wed Nov 25 15:18:44 2026 -> SelfCheck: Database status OK.", false},
		{"Wed Nov 25 15:18:44 2026 -> WARNING: INSTREAM: Size limit reached, (requested: 8188, max: 5120)", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := isVerdictLine(tt.line); got != tt.want {
			t.Errorf("isVerdictLine(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

// TestLongDir pins the socket fallback: a directory whose socket path would
// not fit sun_path gets its socket in a short directory under /tmp, which
// Stop removes and Restart recreates.
func TestLongDir(t *testing.T) {
	Require(t)
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	c, err := Start(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	if len(c.Socket) > maxSocketPath || !strings.HasPrefix(c.Socket, "/tmp/cft") {
		t.Errorf("Socket = %q, want a short path under /tmp/cft", c.Socket)
	}
	if got, err := instream(c.Socket, EICAR()); err != nil || got != "stream: "+EICARSignature+" FOUND" {
		t.Errorf("INSTREAM = %q, %v", got, err)
	}
	if err := c.Restart(); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if reply, err := command(c.Socket, "PING"); err != nil || reply != "PONG" {
		t.Errorf("PING after Restart = %q, %v", reply, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(c.Socket)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("short socket directory after Stop: %v, want it removed", err)
	}
}

// BenchmarkStart measures Start and Stop of a private clamd (the package
// comment quotes it): go test -run '^$' -bench Start ./test/clamdtest/.
func BenchmarkStart(b *testing.B) {
	Require(b)
	for i := 0; b.Loop(); i++ {
		c, err := Start(filepath.Join(b.TempDir(), fmt.Sprint(i)), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestStartFailure checks that a clamd that cannot start is reported with
// its output instead of a 60s timeout.
func TestStartFailure(t *testing.T) {
	Require(t)
	start := time.Now()
	_, err := Start(t.TempDir(), Options{ExtraConfig: "NoSuchDirective yes"})
	if err == nil {
		t.Fatal("Start with a bad config succeeded")
	}
	if !strings.Contains(err.Error(), "NoSuchDirective") {
		t.Errorf("error does not show clamd's complaint:\n%v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failure took %v, want it detected when clamd exits", d)
	}
}

// fildes scans the file at path with FILDES on the clamd at socket.
func fildes(t *testing.T, socket, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	if _, _, err := conn.WriteMsgUnix([]byte("zFILDES\x00\x00"), unix.UnixRights(int(f.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	reply, err := bufio.NewReader(conn).ReadString(0)
	if err != nil {
		t.Fatalf("FILDES reply: %q, %v", reply, err)
	}
	return strings.TrimSuffix(reply, "\x00")
}

// TestProxy: scans through the proxy get clamd's own verdicts, by stream
// and by descriptor; they are counted as they arrive (other commands are
// not), and held ones reach clamd only once released.
func TestProxy(t *testing.T) {
	c := New(t, Options{})
	p := NewProxy(t, c)
	if reply, err := command(p.Socket, "PING"); err != nil || reply != "PONG" {
		t.Fatalf("PING through the proxy = %q, %v", reply, err)
	}
	if got, err := instream(p.Socket, EICAR()); err != nil || got != "stream: "+EICARSignature+" FOUND" {
		t.Errorf("INSTREAM of EICAR through the proxy = %q, %v", got, err)
	}
	big := randomBytes(3<<20+5, 8) // several chunks
	copy(big[1<<20-10:], Marker()) // across the first chunk boundary
	if got, err := instream(p.Socket, big); err != nil || got != "stream: "+MarkerSignature+" FOUND" {
		t.Errorf("INSTREAM of 3 MiB with the marker across a chunk boundary = %q, %v", got, err)
	}
	file := filepath.Join(t.TempDir(), "eicar.com")
	if err := os.WriteFile(file, EICAR(), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := fildes(t, p.Socket, file); !strings.HasSuffix(got, ": "+EICARSignature+" FOUND") {
		t.Errorf("FILDES of EICAR through the proxy = %q", got)
	}
	if n := p.Scans(); n != 3 {
		t.Errorf("Scans = %d after 3 scans and a PING; want 3", n)
	}

	p.Hold()
	done := make(chan string, 2)
	go func() { got, _ := instream(p.Socket, []byte("held stream")); done <- got }()
	s := p.Next(t, 30*time.Second)
	if s.Command != "INSTREAM" || string(s.Data) != "held stream" {
		t.Errorf("held scan %s %q; want INSTREAM of the bytes sent", s.Command, s.Data)
	}
	go func() { done <- fildes(t, p.Socket, file) }()
	s2 := p.Next(t, 30*time.Second)
	if s2.Command != "FILDES" || s2.Path != file {
		t.Errorf("held scan %s %q; want FILDES of %s", s2.Command, s2.Path, file)
	}
	select {
	case got := <-done:
		t.Fatalf("a held scan was answered: %q", got)
	default:
	}
	s.Release()
	if got := <-done; got != "stream: OK" {
		t.Errorf("released INSTREAM = %q; want stream: OK", got)
	}
	p.Release()
	if got := <-done; !strings.HasSuffix(got, ": "+EICARSignature+" FOUND") {
		t.Errorf("released FILDES = %q", got)
	}
	if n := p.Scans(); n != 5 {
		t.Errorf("Scans = %d; want 5", n)
	}
}

// TestProxyConcurrent: scans through the proxy at once, by descriptor and
// by stream, each get their own reply; and a stream over clamd's limit
// gets clamd's refusal, which clamd sends before it has read everything.
// (A regression test: a zero-length write after a FILDES, failing with
// EPIPE once clamd had answered and closed, lost the reply.)
func TestProxyConcurrent(t *testing.T) {
	c := New(t, Options{StreamMaxLength: "1M"})
	p := NewProxy(t, c)
	clean := filepath.Join(t.TempDir(), "clean")
	if err := os.WriteFile(clean, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 50
	errs := make(chan string, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				var got, want string
				if (w+i)%2 == 0 {
					got, want = fildes(t, p.Socket, clean), ": OK"
				} else {
					r, err := instream(p.Socket, EICAR())
					got, want = fmt.Sprintf("%s %v", r, err), "stream: "+EICARSignature+" FOUND <nil>"
				}
				if !strings.HasSuffix(got, want) {
					errs <- fmt.Sprintf("scan %d of worker %d: %q; want ...%q", i, w, got, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got, err := instream(p.Socket, randomBytes(3<<20, 9)); err != nil || got != "INSTREAM size limit exceeded. ERROR" {
		t.Errorf("INSTREAM over StreamMaxLength through the proxy = %q, %v", got, err)
	}
	if n := p.Scans(); n != workers*each+1 {
		t.Errorf("Scans = %d; want %d", n, workers*each+1)
	}
}
