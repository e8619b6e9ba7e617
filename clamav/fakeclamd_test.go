package clamav

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeClamd is a scripted clamd on a unix socket in t.TempDir(). It serves
// faults a real clamd cannot be made to produce on demand.
type fakeClamd struct {
	path   string
	ln     net.Listener
	handle func(f *fakeClamd, conn net.Conn)

	// requests receives what INSTREAM handlers parsed, for framing checks.
	requests chan request
	// fildes receives what FILDES handlers received.
	fildes chan fildesRequest
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
		fildes:   make(chan fildesRequest, 64),
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

// client returns a Client for the fake with the given timeout and chunk
// size, and the default transport (auto: FILDES for ScanFile).
func (f *fakeClamd) client(tb testing.TB, timeout time.Duration, chunkSize int) *Client {
	tb.Helper()
	return f.clientWith(tb, Options{Timeout: timeout, ChunkSize: chunkSize})
}

// clientWith returns a Client for the fake with opts (address filled in).
func (f *fakeClamd) clientWith(tb testing.TB, opts Options) *Client {
	tb.Helper()
	opts.Network, opts.Address = "unix", f.path
	c, err := New(opts)
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

// fildesRequest is one FILDES request as the fake received it.
type fildesRequest struct {
	msg  string      // the bytes that came with the descriptor
	fds  int         // descriptors received
	st   unix.Stat_t // of the descriptor received
	off  int64       // its offset when received
	data []byte      // the whole file, read through it from offset 0
}

// readFildes reads one message, at most 64 bytes, with its ancillary data.
// When it is a FILDES request it returns it, with ok; otherwise it returns
// the bytes read, for an INSTREAM handler to continue from.
func readFildes(conn net.Conn) (req fildesRequest, ok bool, head []byte, err error) {
	uc := conn.(*net.UnixConn)
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return req, false, nil, err
	}
	req.msg = string(buf[:n])
	if !strings.HasPrefix(req.msg, fildesCmd) {
		return req, false, buf[:n], nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return req, true, nil, err
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			req.fds++
			if req.fds > 1 {
				unix.Close(fd)
				continue
			}
			f := os.NewFile(uintptr(fd), "received")
			unix.Fstat(fd, &req.st)
			req.off, _ = f.Seek(0, io.SeekCurrent)
			req.data, err = io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
			f.Close()
			if err != nil {
				return req, true, nil, err
			}
		}
	}
	return req, true, nil, nil
}

// fildesReply serves FILDES: it receives the descriptor, reads the file
// through it, records the request, and sends raw.
func fildesReply(raw string) func(*fakeClamd, net.Conn) {
	return func(f *fakeClamd, conn net.Conn) {
		req, ok, _, err := readFildes(conn)
		if err != nil || !ok {
			io.WriteString(conn, "UNKNOWN COMMAND\x00")
			return
		}
		select {
		case f.fildes <- req:
		default: // nobody is looking
		}
		io.WriteString(conn, raw)
	}
}

// fildesOrInstream answers FILDES with fildesRaw and INSTREAM with
// instreamRaw, recording both kinds of request.
func fildesOrInstream(fildesRaw, instreamRaw string) func(*fakeClamd, net.Conn) {
	return func(f *fakeClamd, conn net.Conn) {
		freq, ok, head, err := readFildes(conn)
		if err != nil {
			return
		}
		if ok {
			select {
			case f.fildes <- freq:
			default:
			}
			io.WriteString(conn, fildesRaw)
			return
		}
		req, err := readRequest(bufio.NewReader(io.MultiReader(bytes.NewReader(head), conn)), false)
		if err != nil {
			return
		}
		select {
		case f.requests <- req:
		default:
		}
		io.WriteString(conn, instreamRaw)
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
