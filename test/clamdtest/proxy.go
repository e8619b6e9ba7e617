package clamdtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Proxy passes clamd's protocol through, unchanged, between its clients
// (clamfuse) and a Clamd: the descriptors that ride with FILDES are
// passed on as they came. On the way it sees every scan, so that a test
// can count scans exactly, without waiting for clamd's log, and can hold
// scans before anything of them reaches clamd, to set up a situation (an
// open waiting for a scan, a scan in flight at a given moment) and know
// that it arose.
//
// A scan is an INSTREAM or FILDES request (with the "z" or "n" prefix);
// every other command (PING, VERSION, RELOAD...) passes through without
// being counted or held. The proxy reads a whole INSTREAM stream before
// it passes it on, in memory: it is for files of a few MiB.
type Proxy struct {
	// Socket is the proxy's unix socket; Address is "unix:" + Socket.
	Socket  string
	backend string // clamd's socket

	mu       sync.Mutex // guards the fields below
	scans    int
	holding  bool
	held     []*Scan // every scan held since the last Release
	closed   bool
	waitNext *sync.Cond // signalled when a scan is queued
	queue    []*Scan    // held scans Next has not returned yet
}

// Scan is one scan request seen by a Proxy.
type Scan struct {
	// Command is "INSTREAM" or "FILDES".
	Command string
	// Data is what an INSTREAM scan streamed; nil for FILDES.
	Data []byte
	// Path is, for FILDES, the file the passed descriptor was opened as
	// (its /proc/self/fd link: clamfuse's backing file, or the one its
	// private copy was made of); "" for INSTREAM.
	Path string

	release chan struct{}
	once    sync.Once
}

// Release lets a held scan go on to clamd. Releasing twice is fine.
func (s *Scan) Release() { s.once.Do(func() { close(s.release) }) }

// NewProxy starts a proxy in front of c, stopped when t ends. Scans pass
// freely until Hold.
func NewProxy(t testing.TB, c *Clamd) *Proxy {
	t.Helper()
	dir, err := os.MkdirTemp("", "cfproxy") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Socket: filepath.Join(dir, "clamd.sock"), backend: c.Socket}
	p.waitNext = sync.NewCond(&p.mu)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.Socket, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(conn) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.Release()
		p.waitNext.Broadcast()
		wg.Wait()
		os.RemoveAll(dir)
	})
	return p
}

// Address is the proxy's address for clamfuse's clamd.address.
func (p *Proxy) Address() string { return "unix:" + p.Socket }

// Scans is how many scan requests have arrived so far, held or not. A
// scan that an open waited for has arrived before the open returned, so
// once a test's opens have returned this count includes their scans.
func (p *Proxy) Scans() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.scans
}

// Hold makes every scan that arrives from now on wait, before anything
// of it reaches clamd, until it is released (Scan.Release, or Release).
func (p *Proxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = true
}

// Release stops holding scans, and lets every scan held go on.
func (p *Proxy) Release() {
	p.mu.Lock()
	held := p.held
	p.holding, p.held, p.queue = false, nil, nil
	p.mu.Unlock()
	for _, s := range held {
		s.Release()
	}
}

// Next returns the next scan held, in the order they arrived, waiting
// for one up to within; it fails t if none comes.
func (p *Proxy) Next(t testing.TB, within time.Duration) *Scan {
	t.Helper()
	timer := time.AfterFunc(within, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.waitNext.Broadcast()
	})
	defer timer.Stop()
	deadline := time.Now().Add(within)
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.queue) == 0 {
		if p.closed || !time.Now().Before(deadline) {
			t.Fatalf("clamdtest.Proxy: no scan held within %v (%d scans so far)", within, p.scans)
		}
		p.waitNext.Wait()
	}
	s := p.queue[0]
	p.queue = p.queue[1:]
	return s
}

// sessionCmd starts a clamd session (IDSESSION): the client then sends
// request after request on the connection, and each reply carries the
// request's number, from 1 ("1: fd[12]: OK").
const sessionCmd = "zIDSESSION\x00"

// serve passes one client connection through to clamd. A session is
// served request by request, each on a connection of its own to clamd,
// and each reply given the request's number: so every scan in it is
// seen, counted and can be held like a scan on a connection of its own.
func (p *Proxy) serve(client *net.UnixConn) {
	defer client.Close()
	r := &requestReader{c: client}
	defer r.closeFds()
	req, fds, err := r.next()
	if err != nil && len(req) == 0 {
		return
	}
	if string(req) != sessionCmd {
		p.pass(client, r, req, fds, err, 0)
		return
	}
	for id := 1; ; id++ {
		req, fds, err := r.next()
		if len(req) == 0 || string(req) == "zEND\x00" {
			return
		}
		if !p.pass(client, r, req, fds, err, id) {
			return
		}
	}
}

// pass passes one request through to clamd on a connection of its own,
// and clamd's reply back; in a session (id > 0) the reply, one
// NUL-terminated part at a time, with "<id>: " before it. It reports
// whether the client may go on.
func (p *Proxy) pass(client *net.UnixConn, r *requestReader, req []byte, fds []int, err error, id int) bool {
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	cmd := scanCommand(req)
	if cmd != "" {
		if err != nil {
			return false // the client gave up before its request was whole
		}
		s := &Scan{Command: cmd, release: make(chan struct{})}
		if cmd == "INSTREAM" {
			s.Data = instreamData(req)
		} else if len(fds) > 0 {
			s.Path, _ = os.Readlink("/proc/self/fd/" + strconv.Itoa(fds[0]))
			if p, ok := strings.CutPrefix(s.Path, "/memfd:"); ok {
				// A private copy of a file whose contents clamfuse
				// verifies, named after the file (cache/verify.go).
				s.Path = strings.TrimSuffix(p, " (deleted)")
			}
		}
		p.mu.Lock()
		p.scans++
		hold := p.holding && !p.closed
		if hold {
			p.held = append(p.held, s)
			p.queue = append(p.queue, s)
			p.waitNext.Broadcast()
		}
		p.mu.Unlock()
		if hold && !r.waitRelease(s) {
			return false // the client closes its end when it gives up
		}
	}
	backend, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.backend, Net: "unix"})
	if err != nil {
		return false // the client sees its connection closed without a reply
	}
	defer backend.Close()
	if len(fds) > 0 {
		// The descriptors ride with the request's first bytes, as they
		// came; sendmsg may send less than all, so the rest follows.
		n, _, err := backend.WriteMsgUnix(req, unix.UnixRights(fds...), nil)
		if err != nil {
			return false
		}
		req = req[n:]
	}
	if len(req) > 0 {
		// clamd may answer before it has read everything (a stream over
		// its limit) and close: the write then fails, and the reply
		// still goes back below. (Nor is there a zero-length write: it
		// fails with EPIPE once clamd has answered a FILDES and closed.)
		backend.Write(req)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	fds = nil
	if id == 0 {
		if cmd == "" {
			// Not a scan: whatever else the client says goes through too.
			backend.Write(r.buf)
			r.buf = nil
			go func() {
				io.Copy(backend, client)
				backend.CloseWrite()
			}()
		}
		io.Copy(client, backend)
		return false
	}
	reply, _ := io.ReadAll(backend)
	var out []byte
	for part := range bytes.SplitAfterSeq(reply, []byte{0}) {
		if len(part) > 0 {
			out = append(append(out, strconv.Itoa(id)+": "...), part...)
		}
	}
	if _, err := client.Write(out); err != nil || len(reply) == 0 || reply[len(reply)-1] != 0 {
		return false // clamd closed without a whole reply: so does the proxy
	}
	return true
}

// requestReader reads a client's requests one at a time, with the
// descriptors that come with them.
type requestReader struct {
	c   *net.UnixConn
	buf []byte // read, not yet returned
	fds []int  // received, not yet returned
}

// next returns the next request: for a scan, all of it (FILDES: the
// command and its byte; INSTREAM: up to the zero-length chunk); for
// anything else, the command. The descriptors received while it was
// read come with it, and the caller closes them.
func (r *requestReader) next() (req []byte, fds []int, err error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(16*4))
	for {
		if n := requestLen(r.buf); n > 0 {
			req, r.buf = r.buf[:n:n], r.buf[n:]
			if string(req) == sessionCmd {
				return req, nil, nil // descriptors go with what follows
			}
			fds, r.fds = r.fds, nil
			return req, fds, nil
		}
		n, oobn, _, _, rerr := r.c.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if rights, err := unix.ParseUnixRights(&m); err == nil {
						r.fds = append(r.fds, rights...)
					}
				}
			}
		}
		if n > 0 {
			r.buf = append(r.buf, buf[:n]...)
		}
		if rerr != nil {
			if n := requestLen(r.buf); n > 0 {
				continue
			}
			req, r.buf = r.buf, nil
			fds, r.fds = r.fds, nil
			return req, fds, rerr
		}
	}
}

// waitRelease waits until s is released, and reports true, or until the
// client closes its connection (it gave up), and reports false. A client
// sends nothing while it waits for a reply; what it sends anyway is kept
// for next.
func (r *requestReader) waitRelease(s *Scan) bool {
	gone := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			n, err := r.c.Read(b)
			r.buf = append(r.buf, b[:n]...)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					close(gone)
				}
				return
			}
		}
	}()
	select {
	case <-s.release:
		r.c.SetReadDeadline(time.Unix(1, 0))
		<-done
		r.c.SetReadDeadline(time.Time{})
		select {
		case <-gone:
			return false
		default:
			return true
		}
	case <-gone:
		<-done
		return false
	}
}

func (r *requestReader) closeFds() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = nil
}

// requestLen is the length of the whole request at the start of buf, or
// 0 when buf does not hold one yet.
func requestLen(buf []byte) int {
	end := bytes.IndexAny(buf, "\x00\n")
	if end < 0 {
		return 0
	}
	switch scanCommand(buf) {
	case "FILDES":
		if len(buf) > end+1 {
			return end + 2 // the byte the descriptor rides with
		}
		return 0
	case "INSTREAM":
		off := end + 1
		for {
			if len(buf) < off+4 {
				return 0
			}
			n := int(binary.BigEndian.Uint32(buf[off:]))
			off += 4
			if n == 0 {
				return off
			}
			if len(buf) < off+n {
				return 0
			}
			off += n
		}
	}
	return end + 1
}

// scanCommand names the scan req asks for ("INSTREAM", "FILDES"), or ""
// for any other command.
func scanCommand(req []byte) string {
	end := bytes.IndexAny(req, "\x00\n")
	if end < 1 {
		return ""
	}
	switch string(req[1:end]) {
	case "INSTREAM":
		return "INSTREAM"
	case "FILDES":
		return "FILDES"
	}
	return ""
}

// instreamData returns the bytes an INSTREAM request streams.
func instreamData(req []byte) []byte {
	rest := req[bytes.IndexAny(req, "\x00\n")+1:]
	var out []byte
	for len(rest) >= 4 {
		n := int(binary.BigEndian.Uint32(rest))
		if n == 0 || len(rest) < 4+n {
			break
		}
		out = append(out, rest[4:4+n]...)
		rest = rest[4+n:]
	}
	return out
}
