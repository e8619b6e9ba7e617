package clamav

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClamd is a scripted clamd on a unix socket in t.TempDir(). It serves
// faults a real clamd cannot be made to produce on demand.
type fakeClamd struct {
	path   string
	ln     net.Listener
	handle func(f *fakeClamd, conn net.Conn)

	// requests receives what INSTREAM handlers parsed, for framing checks.
	requests chan request
	// closed is closed at cleanup; handlers that stall wait on it.
	closed chan struct{}

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // accept loop and handlers
}

// request is one INSTREAM request as the fake received it.
type request struct {
	cmd    string // up to and including the NUL
	chunks []int  // chunk lengths, including the final 0
	data   []byte // reassembled stream; nil when discarded
}

func startFake(tb testing.TB, handle func(f *fakeClamd, conn net.Conn)) *fakeClamd {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "c.sock")
	if len(path) > maxUnixPath {
		tb.Fatalf("socket path %q too long for a unix socket", path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakeClamd{
		path:     path,
		ln:       ln,
		handle:   handle,
		requests: make(chan request, 64),
		closed:   make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
	}
	f.wg.Add(1)
	go f.serve()
	tb.Cleanup(f.close)
	return f
}

func (f *fakeClamd) serve() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[conn] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() {
				f.mu.Lock()
				delete(f.conns, conn)
				f.mu.Unlock()
				conn.Close()
			}()
			f.handle(f, conn)
		}()
	}
}

func (f *fakeClamd) close() {
	close(f.closed)
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// client returns a Client for the fake with the given timeout and chunk size.
func (f *fakeClamd) client(tb testing.TB, timeout time.Duration, chunkSize int) *Client {
	tb.Helper()
	c, err := New(Options{Network: "unix", Address: f.path, Timeout: timeout, ChunkSize: chunkSize})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// readRequest parses an INSTREAM request. With discard it does not keep the
// data (for benchmarks).
func readRequest(br *bufio.Reader, discard bool) (request, error) {
	var req request
	cmd, err := br.ReadString(0)
	req.cmd = cmd
	if err != nil {
		return req, err
	}
	if cmd != instreamCmd {
		return req, fmt.Errorf("command %q, want %q", cmd, instreamCmd)
	}
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return req, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		req.chunks = append(req.chunks, int(n))
		if n == 0 {
			return req, nil
		}
		if discard {
			if _, err := br.Discard(int(n)); err != nil {
				return req, err
			}
			continue
		}
		start := len(req.data)
		req.data = append(req.data, make([]byte, n)...)
		if _, err := io.ReadFull(br, req.data[start:]); err != nil {
			return req, err
		}
	}
}

// replyAfterStream reads a whole request, records it, and sends raw.
func replyAfterStream(raw string) func(*fakeClamd, net.Conn) {
	return func(f *fakeClamd, conn net.Conn) {
		req, err := readRequest(bufio.NewReader(conn), false)
		if err != nil {
			return
		}
		select {
		case f.requests <- req:
		default: // nobody is looking
		}
		io.WriteString(conn, raw)
	}
}

// replyAfter reads n bytes of the request (command included), sends raw and
// closes, as clamd does when StreamMaxLength is exceeded.
func replyAfter(n int64, raw string) func(*fakeClamd, net.Conn) {
	return func(f *fakeClamd, conn net.Conn) {
		if _, err := io.CopyN(io.Discard, conn, n); err != nil {
			return
		}
		io.WriteString(conn, raw)
	}
}

// lineCommand serves baruwa's "n<CMD>\n" commands: it checks the command,
// sends raw and closes, as clamd does outside IDSESSION.
func lineCommand(want, raw string) func(*fakeClamd, net.Conn) {
	return func(f *fakeClamd, conn net.Conn) {
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return
		}
		if line != "n"+want+"\n" {
			io.WriteString(conn, "UNKNOWN COMMAND\n")
			return
		}
		io.WriteString(conn, raw)
	}
}

// stall holds the connection open without reading or writing until cleanup.
func stall(f *fakeClamd, conn net.Conn) { <-f.closed }

// wantKind checks that err wraps want and no other kind, and is one line.
func wantKind(tb testing.TB, err, want error) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("err = nil, want %v", want)
	}
	for _, k := range kinds {
		if got := errors.Is(err, k); got != (k == want) {
			tb.Errorf("errors.Is(%q, %v) = %v, want %v", err, k, got, k == want)
		}
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		tb.Errorf("error message is not one line: %q", err)
	}
}
