package clamav

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tempFile writes content to a new file and opens it for reading; it is
// closed when the test ends.
func tempFile(t *testing.T, content []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestNewTransport(t *testing.T) {
	tests := []struct {
		network   string
		transport Transport
		want      Transport // "" means New fails
	}{
		{"unix", "", TransportFildes},
		{"unix", TransportAuto, TransportFildes},
		{"unix", TransportFildes, TransportFildes},
		{"unix", TransportInstream, TransportInstream},
		{"tcp", "", TransportInstream},
		{"tcp", TransportAuto, TransportInstream},
		{"tcp", TransportInstream, TransportInstream},
		{"tcp", TransportFildes, ""},
		{"unix", "FILDES", ""},
		{"unix", "stream", ""},
	}
	for _, tt := range tests {
		addr := "/run/clamd.sock"
		if tt.network == "tcp" {
			addr = "127.0.0.1:3310"
		}
		c, err := New(Options{Network: tt.network, Address: addr, Timeout: time.Second, Transport: tt.transport})
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("New(%s, %q) = %v; want an error", tt.network, tt.transport, c.Transport())
		case tt.want != "" && err != nil:
			t.Errorf("New(%s, %q): %v", tt.network, tt.transport, err)
		case tt.want != "" && c.Transport() != tt.want:
			t.Errorf("New(%s, %q).Transport() = %q; want %q", tt.network, tt.transport, c.Transport(), tt.want)
		}
	}
}

// TestScanFileFildes checks what clamd receives: the command and one byte
// in one message, with exactly one descriptor of the very file, whatever
// its offset, which ScanFile leaves alone.
func TestScanFileFildes(t *testing.T) {
	content := randomData(3<<20+17, 7)
	f := startFake(t, fildesReply("fd[12]: OK\x00"))
	c := f.clientWith(t, Options{Timeout: 5 * time.Second, Transport: TransportFildes})
	file := tempFile(t, content)
	const off = 1000
	if _, err := file.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	res, err := c.ScanFile(context.Background(), file, int64(len(content)))
	if err != nil || res != (Result{}) {
		t.Fatalf("ScanFile = %+v, %v; want clean", res, err)
	}
	req := <-f.fildes
	if req.msg != "zFILDES\x00\x00" || req.fds != 1 {
		t.Errorf("received %q with %d descriptors; want \"zFILDES\\x00\\x00\" with 1", req.msg, req.fds)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if req.st.Dev != st.Dev || req.st.Ino != st.Ino {
		t.Errorf("received inode %d:%d; want %d:%d", req.st.Dev, req.st.Ino, st.Dev, st.Ino)
	}
	if req.off != off || !bytes.Equal(req.data, content) {
		t.Errorf("received a descriptor at offset %d (want %d) reading %d bytes (want the file's %d)",
			req.off, off, len(req.data), len(content))
	}
	if got, _ := file.Seek(0, io.SeekCurrent); got != off {
		t.Errorf("offset after ScanFile = %d; want %d", got, off)
	}
	select {
	case r := <-f.requests:
		t.Errorf("an INSTREAM request too: %+v", r.chunks)
	default:
	}
}

// TestScanFileInstream: with TransportInstream, ScanFile streams the first
// size bytes from offset 0 and leaves the offset alone.
func TestScanFileInstream(t *testing.T) {
	content := randomData(2<<20+5, 8)
	f := startFake(t, fildesOrInstream("fd[3]: OK\x00", "stream: OK\x00"))
	c := f.clientWith(t, Options{Timeout: 5 * time.Second, Transport: TransportInstream})
	file := tempFile(t, append(content, "grown since fstat"...))
	if _, err := file.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	res, err := c.ScanFile(context.Background(), file, int64(len(content)))
	if err != nil || res != (Result{}) {
		t.Fatalf("ScanFile = %+v, %v; want clean", res, err)
	}
	req := <-f.requests
	if !bytes.Equal(req.data, content) {
		t.Errorf("streamed %d bytes; want the first %d", len(req.data), len(content))
	}
	if got, _ := file.Seek(0, io.SeekCurrent); got != int64(len(content))+17 {
		t.Errorf("offset after ScanFile = %d; want it left at the end", got)
	}
	select {
	case <-f.fildes:
		t.Error("a FILDES request too")
	default:
	}
}

// TestScanFileFaults: FILDES replies are read, checked and classified as
// INSTREAM's are, named "FILDES" in the message.
func TestScanFileFaults(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name    string
		handle  func(*fakeClamd, net.Conn)
		want    error  // kind; nil means a Result
		result  Result // when want is nil
		msg     string // substring of the error message
		timeout bool   // must take about Options.Timeout
	}{
		{name: "ok", handle: fildesReply("fd[12]: OK\x00")},
		{name: "found", handle: fildesReply("fd[12]: Eicar-Test-Signature FOUND\x00"),
			result: Result{Infected: true, Signature: "Eicar-Test-Signature"}},
		{name: "over MaxFileSize with AlertExceedsMax", handle: fildesReply("fd[12]: Heuristics.Limits.Exceeded.MaxFileSize FOUND\x00"),
			result: Result{Infected: true, Signature: "Heuristics.Limits.Exceeded.MaxFileSize"}},
		{name: "garbage", handle: fildesReply("HELLO\x00"), want: ErrProtocol, msg: `unexpected reply "HELLO"`},
		{name: "INSTREAM's name", handle: fildesReply("stream: OK\x00"), want: ErrProtocol, msg: `unexpected reply "stream: OK"`},
		{name: "ok without NUL then close", handle: fildesReply("fd[12]: OK"), want: ErrProtocol, msg: "reply not NUL-terminated"},
		{name: "ok then trailing data", handle: fildesReply("fd[12]: OK\x00fd[12]: OK\x00"), want: ErrProtocol, msg: "unexpected data after reply"},
		{name: "closed without reply", handle: fildesReply(""), want: ErrProtocol, msg: "connection closed without a reply"},
		{name: "reply too long", handle: fildesReply(strings.Repeat("A", 5000)), want: ErrProtocol, msg: "no NUL in the first 4096 bytes"},
		{name: "accepts and never answers", handle: func(f *fakeClamd, conn net.Conn) {
			readFildes(conn)
			<-f.closed
		}, want: ErrTimeout, timeout: true, msg: "FILDES: clamd timeout after 300ms waiting for reply"},
		{name: "never reads", handle: stall, want: ErrTimeout, timeout: true, msg: "FILDES: clamd timeout after 300ms waiting for reply"},
		{name: "clamd cannot read the file", handle: fildesReply("fd[12]: Can't read file ERROR\x00"), want: ErrClamd, msg: `"fd[12]: Can't read file ERROR"`},
		// Explicit fildes: no fallback to INSTREAM, no verdict.
		{name: "no descriptor received", handle: fildesOrInstream("No file descriptor received. ERROR\x00", "stream: OK\x00"),
			want: ErrClamd, msg: `"No file descriptor received. ERROR"`},
		{name: "unknown command", handle: fildesOrInstream("UNKNOWN COMMAND\x00", "stream: OK\x00"),
			want: ErrProtocol, msg: `"UNKNOWN COMMAND"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFake(t, tt.handle)
			opts := Options{Timeout: 5 * time.Second, Transport: TransportFildes}
			if tt.timeout {
				opts.Timeout = timeout
			}
			c := f.clientWith(t, opts)
			file := tempFile(t, []byte("some bytes"))
			start := time.Now()
			res, err := c.ScanFile(context.Background(), file, 10)
			elapsed := time.Since(start)
			if tt.want == nil {
				if err != nil || res != tt.result {
					t.Fatalf("ScanFile = %+v, %v; want %+v", res, err, tt.result)
				}
				return
			}
			if res != (Result{}) {
				t.Errorf("Result %+v with error", res)
			}
			wantKind(t, err, tt.want)
			if !strings.HasPrefix(err.Error(), "clamd unix:"+f.path+": FILDES: ") {
				t.Errorf("message %q does not start with the address and FILDES", err)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q does not contain %q", err, tt.msg)
			}
			if tt.timeout && (elapsed < timeout-10*time.Millisecond || elapsed > timeout+time.Second) {
				t.Errorf("took %v with Timeout %v", elapsed, timeout)
			}
			if !tt.timeout && elapsed > 2*time.Second {
				t.Errorf("took %v for a fault that needs no wait", elapsed)
			}
			select {
			case <-f.requests:
				t.Error("streamed with INSTREAM after a FILDES failure; transport fildes must not fall back")
			default:
			}
		})
	}
}

// TestScanFileAutoFallsBack: with transport auto, a clamd that refuses the
// descriptor gets the file streamed at once, and every later file; other
// FILDES failures are errors (no verdict), not a reason to stream.
func TestScanFileAutoFallsBack(t *testing.T) {
	for _, refusal := range []string{"No file descriptor received. ERROR\x00", "UNKNOWN COMMAND\x00"} {
		t.Run(quote(refusal), func(t *testing.T) {
			f := startFake(t, fildesOrInstream(refusal, "stream: Eicar-Test-Signature FOUND\x00"))
			c := f.clientWith(t, Options{Timeout: 5 * time.Second})
			if c.Transport() != TransportFildes {
				t.Fatalf("Transport() = %q before any scan; want fildes", c.Transport())
			}
			want := Result{Infected: true, Signature: "Eicar-Test-Signature"}
			for i := range 2 {
				content := []byte("file " + string(rune('a'+i)))
				res, err := c.ScanFile(context.Background(), tempFile(t, content), int64(len(content)))
				if err != nil || res != want {
					t.Fatalf("scan %d: %+v, %v; want %+v", i, res, err, want)
				}
				if req := <-f.requests; !bytes.Equal(req.data, content) {
					t.Errorf("scan %d: streamed %q; want %q", i, req.data, content)
				}
			}
			if n := len(f.fildes); n != 1 {
				t.Errorf("%d FILDES requests; want 1, then INSTREAM only", n)
			}
			if c.Transport() != TransportInstream {
				t.Errorf("Transport() = %q after the refusal; want instream", c.Transport())
			}
		})
	}
	t.Run("other errors do not switch", func(t *testing.T) {
		f := startFake(t, fildesOrInstream("fd[4]: Can't read file ERROR\x00", "stream: OK\x00"))
		c := f.clientWith(t, Options{Timeout: 5 * time.Second, Transport: TransportAuto})
		_, err := c.ScanFile(context.Background(), tempFile(t, []byte("x")), 1)
		wantKind(t, err, ErrClamd)
		if c.Transport() != TransportFildes || len(f.requests) != 0 {
			t.Errorf("Transport() = %q, %d INSTREAM requests; want fildes and none", c.Transport(), len(f.requests))
		}
	})
}

// TestPoolLogsFallback: the pool says once, at WARN, that a backend
// refused descriptors and is streamed to from then on.
func TestPoolLogsFallback(t *testing.T) {
	f := startFake(t, fildesOrInstream("No file descriptor received. ERROR\x00", "stream: OK\x00"))
	var log bytes.Buffer
	var mu sync.Mutex
	p, err := NewPool([]*Client{f.client(t, 5*time.Second, 0)}, PoolOptions{
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	for i := range 3 {
		res, err := p.ScanFile(context.Background(), tempFile(t, []byte("x")), 1)
		if err != nil || res.Infected {
			t.Fatalf("scan %d: %+v, %v; want clean", i, res, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(log.String(), "clamd refused a file descriptor"); n != 1 || !strings.Contains(log.String(), "level=WARN") {
		t.Errorf("log:\n%s\nwant one WARN line about the refusal", log.String())
	}
	if s := p.Status()[0]; s.Transport != TransportInstream {
		t.Errorf("Status().Transport = %q; want instream", s.Transport)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestScanFileLocalErrors(t *testing.T) {
	f := startFake(t, fildesOrInstream("fd[3]: OK\x00", "stream: OK\x00"))
	for _, tr := range []Transport{TransportFildes, TransportInstream} {
		t.Run(string(tr), func(t *testing.T) {
			c := f.clientWith(t, Options{Timeout: 5 * time.Second, Transport: tr})
			closed := tempFile(t, []byte("closed"))
			closed.Close()
			_, err := c.ScanFile(context.Background(), closed, 6)
			wantKind(t, err, ErrRead)
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("%v does not wrap os.ErrClosed", err)
			}
			_, err = c.ScanFile(context.Background(), nil, 6)
			wantKind(t, err, ErrRead)
		})
	}
	t.Run("no socket", func(t *testing.T) {
		c, err := New(Options{Network: "unix", Address: t.TempDir() + "/none.sock", Timeout: time.Second, Transport: TransportFildes})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ScanFile(context.Background(), tempFile(t, []byte("x")), 1)
		wantKind(t, err, ErrUnavailable)
	})
	t.Run("canceled", func(t *testing.T) {
		f := startFake(t, func(f *fakeClamd, conn net.Conn) { readFildes(conn); <-f.closed })
		c := f.clientWith(t, Options{Timeout: 5 * time.Second, Transport: TransportFildes})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.ScanFile(ctx, tempFile(t, []byte("x")), 1)
		wantKind(t, err, context.Canceled)
		if d := time.Since(start); d > time.Second {
			t.Errorf("returned %v after cancel", d)
		}
	})
}
