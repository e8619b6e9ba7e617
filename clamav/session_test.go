package clamav

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// sessionConn reads a client's commands in a session: it returns each
// one ("zIDSESSION\x00", "zFILDES\x00" with its byte, "zEND\x00"), the
// descriptors that came with it closed. ok is false at EOF or an error.
type sessionConn struct {
	conn *net.UnixConn
	buf  []byte
}

func (s *sessionConn) next() (cmd string, ok bool) {
	for {
		for _, c := range []string{sessionCmd, string(fildesMsg), "zEND\x00"} {
			if bytes.HasPrefix(s.buf, []byte(c)) {
				s.buf = s.buf[len(c):]
				return c, true
			}
		}
		if len(s.buf) >= len(fildesMsg) {
			return string(s.buf), true // something else: the test fails on it
		}
		b := make([]byte, 64)
		oob := make([]byte, unix.CmsgSpace(4*4))
		n, oobn, _, _, err := s.conn.ReadMsgUnix(b, oob)
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
		if err != nil || n <= 0 {
			return "", false
		}
		s.buf = append(s.buf, b[:n]...)
	}
}

// sessionFake serves sessions with FILDES: answer(conn number from 1,
// request number from 1) is the raw reply; "" closes the connection
// without one, "stall" holds it until cleanup. Connections are counted.
func sessionFake(t *testing.T, answer func(conn, req int) string) (*fakeClamd, *atomic.Int32, *atomic.Int32) {
	var conns, sessions atomic.Int32
	f := startFake(t, func(f *fakeClamd, conn net.Conn) {
		n := int(conns.Add(1))
		s := &sessionConn{conn: conn.(*net.UnixConn)}
		req := 0
		for {
			cmd, ok := s.next()
			switch {
			case !ok || cmd == "zEND\x00":
				return
			case cmd == sessionCmd:
				sessions.Add(1)
				continue
			case cmd != string(fildesMsg):
				t.Errorf("fake clamd: unexpected command %q", cmd)
				return
			}
			req++
			switch r := answer(n, req); r {
			case "":
				return
			case "stall":
				<-f.closed
				return
			default:
				conn.Write([]byte(r + "\x00"))
			}
		}
	})
	return f, &conns, &sessions
}

func scanTemp(t *testing.T, c *Client, ctx context.Context) (Result, error) {
	t.Helper()
	f := tempFile(t, []byte("some bytes"))
	return c.ScanFile(ctx, f, 10)
}

// Scans share one connection in a session while they end well; a reply
// that is not whole and for its request, a closed connection or a
// timeout is never a verdict, and the connection is not used again.
func TestSessionFaults(t *testing.T) {
	t.Run("reused", func(t *testing.T) {
		f, conns, sessions := sessionFake(t, func(_, req int) string { return itoa(req) + ": fd[5]: OK" })
		c := f.clientWith(t, Options{Timeout: 5 * time.Second, Sessions: 2})
		for i := range 3 {
			if res, err := scanTemp(t, c, t.Context()); err != nil || res.Infected {
				t.Fatalf("scan %d: %+v, %v", i, res, err)
			}
		}
		if n, s := conns.Load(), sessions.Load(); n != 1 || s != 1 {
			t.Errorf("%d connections, %d sessions for 3 scans; want 1 and 1", n, s)
		}
	})
	t.Run("found closes the session", func(t *testing.T) {
		f, conns, _ := sessionFake(t, func(_, req int) string { return itoa(req) + ": fd[5]: Eicar-Test-Signature FOUND" })
		c := f.clientWith(t, Options{Timeout: 5 * time.Second, Sessions: 2})
		for i := range 2 {
			if res, err := scanTemp(t, c, t.Context()); err != nil || !res.Infected {
				t.Fatalf("scan %d: %+v, %v", i, res, err)
			}
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("%d connections for 2 infected scans; want 2", n)
		}
	})
	tests := []struct {
		name   string
		answer func(conn, req int) string
		want   error
		// noSessions: the client gives sessions up
		noSessions bool
	}{
		{"wrong id", func(_, req int) string { return itoa(min(req, 2)-1) + ": fd[5]: OK" }, ErrProtocol, true},
		{"wrong id later", func(_, req int) string { return itoa(max(req, 2)-1) + ": fd[5]: OK" }, ErrProtocol, false},
		{"no id", func(_, _ int) string { return "fd[5]: OK" }, ErrProtocol, true},
		{"error without id", func(_, _ int) string { return "UNKNOWN COMMAND ERROR" }, ErrClamd, true},
		{"closed without a reply", func(conn, req int) string { return map[int]string{1: "1: fd[5]: OK"}[req*conn] }, ErrProtocol, false},
		{"stalls", func(_, req int) string { return map[int]string{1: "1: fd[5]: OK", 2: "stall"}[req] }, ErrTimeout, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, conns, _ := sessionFake(t, tt.answer)
			c := f.clientWith(t, Options{Timeout: 500 * time.Millisecond, Sessions: 2})
			var err error
			for i := 0; i < 2 && err == nil; i++ {
				var res Result
				res, err = scanTemp(t, c, t.Context())
				if err == nil && res.Infected {
					t.Fatalf("scan %d: %+v", i, res)
				}
			}
			wantKind(t, err, tt.want)
			if got := len(c.idle); got != 0 {
				t.Errorf("%d idle connections after a failed exchange; want 0", got)
			}
			if c.noSessions.Load() != tt.noSessions {
				t.Errorf("sessions given up: %v; want %v", c.noSessions.Load(), tt.noSessions)
			}
			before := conns.Load()
			scanTemp(t, c, t.Context()) // whatever it says, on a new connection
			if n := conns.Load(); n != before+1 {
				t.Errorf("the scan after the failure used %d new connections; want 1", n-before)
			}
		})
	}
	t.Run("closed as it was taken", func(t *testing.T) {
		// The server closes a session without a reply to its second
		// request, as when clamd ends an idle session just as it is
		// taken: the FILDES request is sent again on a new connection.
		f, conns, _ := sessionFake(t, func(_, req int) string { return map[int]string{1: "1: fd[5]: OK"}[req] })
		c := f.clientWith(t, Options{Timeout: 5 * time.Second, Sessions: 2})
		for i := range 3 {
			if res, err := scanTemp(t, c, t.Context()); err != nil || res.Infected {
				t.Fatalf("scan %d: %+v, %v", i, res, err)
			}
		}
		if n := conns.Load(); n != 3 {
			t.Errorf("%d connections; want 3", n)
		}
	})
	t.Run("closed while idle", func(t *testing.T) {
		// clamd's IdleTimeout: the server closes an idle session.
		f, conns, _ := sessionFake(t, func(conn, req int) string {
			if req == 2 {
				t.Error("a request on a session the server closed")
			}
			return "1: fd[5]: OK"
		})
		c := f.clientWith(t, Options{Timeout: 5 * time.Second, Sessions: 2})
		if _, err := scanTemp(t, c, t.Context()); err != nil {
			t.Fatal(err)
		}
		// The server side closes it: here, by the fake's cleanup path.
		f.mu.Lock()
		for conn := range f.conns {
			conn.(*net.UnixConn).CloseWrite()
		}
		f.mu.Unlock()
		waitUntil(t, "the idle connection to be seen closed", func() bool {
			s := <-c.idle
			defer func() { c.idle <- s }()
			return !alive(s.conn)
		})
		if res, err := scanTemp(t, c, t.Context()); err != nil || res.Infected {
			t.Fatalf("scan after the server closed the idle session: %+v, %v", res, err)
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("%d connections; want 2", n)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		arrived := make(chan struct{})
		f, _, _ := sessionFake(t, func(_, req int) string {
			if req == 1 {
				return "1: fd[5]: OK"
			}
			close(arrived)
			return "stall"
		})
		c := f.clientWith(t, Options{Timeout: time.Minute, Sessions: 2})
		if _, err := scanTemp(t, c, t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-arrived
			cancel()
		}()
		_, err := scanTemp(t, c, ctx)
		wantKind(t, err, context.Canceled)
		if got := len(c.idle); got != 0 {
			t.Errorf("%d idle connections after a cancelled scan; want 0", got)
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// With a real clamd, scans in sessions give the verdicts scans on their
// own connections do, with either transport; a clamd restarted between
// two scans (its sessions gone) is reached anew, and one stopped fails
// the scan (ErrUnavailable): no verdict.
func TestSessionsRealClamd(t *testing.T) {
	cd := clamdtest.New(t, clamdtest.Options{})
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean")
	marked := filepath.Join(dir, "marked")
	if err := os.WriteFile(clean, bytes.Repeat([]byte("clean "), 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marked, append(bytes.Repeat([]byte("x"), 100), clamdtest.Marker()...), 0o644); err != nil {
		t.Fatal(err)
	}
	scan := func(t *testing.T, c *Client, p string) (Result, error) {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		return c.ScanFile(t.Context(), f, st.Size())
	}
	for _, tr := range []Transport{TransportFildes, TransportInstream} {
		t.Run(string(tr), func(t *testing.T) {
			c, err := New(Options{Network: "unix", Address: cd.Socket, Timeout: 30 * time.Second, Transport: tr, Sessions: 2})
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range []string{clean, clean, marked, clean, marked, clean, clean} {
				res, err := scan(t, c, p)
				if err != nil || res.Infected != (p == marked) {
					t.Fatalf("scan %d of %s: %+v, %v", i, filepath.Base(p), res, err)
				}
			}
			if len(c.idle) != 1 {
				t.Fatalf("%d idle sessions after sequential scans; want 1", len(c.idle))
			}
			s := <-c.idle
			if s.id != 3 {
				t.Errorf("the idle session's next request is %d; want 3 (two clean scans since the last FOUND)", s.id)
			}
			c.idle <- s
		})
	}
	c, err := New(Options{Network: "unix", Address: cd.Socket, Timeout: 30 * time.Second, Sessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := scan(t, c, clean); err != nil || res.Infected {
		t.Fatalf("scan: %+v, %v", res, err)
	}
	if err := cd.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{marked, clean} {
		if res, err := scan(t, c, p); err != nil || res.Infected != (p == marked) {
			t.Fatalf("scan of %s after a restart: %+v, %v", filepath.Base(p), res, err)
		}
	}
	if err := cd.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err = scan(t, c, clean)
	wantKind(t, err, ErrUnavailable)
}

// Through clamdtest.Proxy, which the mounted tests count and hold scans
// with, scans in a session are seen one by one, can be held, and get
// their verdicts.
func TestSessionsThroughProxy(t *testing.T) {
	cd := clamdtest.New(t, clamdtest.Options{})
	p := clamdtest.NewProxy(t, cd)
	dir := t.TempDir()
	clean, marked := filepath.Join(dir, "clean"), filepath.Join(dir, "marked")
	if err := os.WriteFile(clean, []byte("clean bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marked, clamdtest.Marker(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []Transport{TransportFildes, TransportInstream} {
		t.Run(string(tr), func(t *testing.T) {
			c, err := New(Options{Network: "unix", Address: p.Socket, Timeout: 30 * time.Second, Transport: tr, Sessions: 1})
			if err != nil {
				t.Fatal(err)
			}
			scan := func(path string) (Result, error) {
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				st, _ := f.Stat()
				return c.ScanFile(t.Context(), f, st.Size())
			}
			before := p.Scans()
			for i, path := range []string{clean, clean, marked, clean} {
				if res, err := scan(path); err != nil || res.Infected != (path == marked) {
					t.Fatalf("scan %d: %+v, %v", i, res, err)
				}
			}
			if n := p.Scans() - before; n != 4 {
				t.Errorf("the proxy saw %d scans; want 4", n)
			}
			p.Hold()
			type answer struct {
				res Result
				err error
			}
			ch := make(chan answer, 1)
			go func() {
				res, err := scan(clean)
				ch <- answer{res, err}
			}()
			s := p.Next(t, 10*time.Second)
			p.Release()
			s.Release()
			if a := <-ch; a.err != nil || a.res.Infected {
				t.Fatalf("held scan: %+v, %v", a.res, a.err)
			}
			if res, err := scan(marked); err != nil || !res.Infected {
				t.Fatalf("scan after the held one: %+v, %v", res, err)
			}
		})
	}
}
