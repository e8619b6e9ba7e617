package clamdtest

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
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
	// (its /proc/self/fd link: clamfuse's backing file); "" for INSTREAM.
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

// serve passes one client connection through to clamd.
func (p *Proxy) serve(client *net.UnixConn) {
	defer client.Close()
	req, fds, err := readRequest(client)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if err != nil && len(req) == 0 {
		return
	}
	cmd := scanCommand(req)
	if cmd != "" {
		if err != nil {
			return // the client gave up before its request was whole
		}
		s := &Scan{Command: cmd, release: make(chan struct{})}
		if cmd == "INSTREAM" {
			s.Data = instreamData(req)
		} else if len(fds) > 0 {
			s.Path, _ = os.Readlink("/proc/self/fd/" + strconv.Itoa(fds[0]))
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
		if hold {
			gone := make(chan struct{})
			go func() { // the client closes its end when it gives up
				io.Copy(io.Discard, client)
				close(gone)
			}()
			select {
			case <-s.release:
			case <-gone:
				return
			}
		}
	}
	backend, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.backend, Net: "unix"})
	if err != nil {
		return // the client sees its connection closed without a reply
	}
	defer backend.Close()
	if len(fds) > 0 {
		// The descriptors ride with the request's first bytes, as they
		// came; sendmsg may send less than all, so the rest follows.
		n, _, err := backend.WriteMsgUnix(req, unix.UnixRights(fds...), nil)
		if err != nil {
			return
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
	if cmd == "" {
		// Not a scan: whatever else the client says goes through too.
		go func() {
			io.Copy(backend, client)
			backend.CloseWrite()
		}()
	}
	io.Copy(client, backend)
}

// readRequest reads a client's request with the descriptors that come
// with it: for a scan, all of it (FILDES: the command and its byte;
// INSTREAM: up to the zero-length chunk); for anything else, the command.
func readRequest(c *net.UnixConn) (req []byte, fds []int, err error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(16*4))
	for {
		if done, _ := requestDone(req); done {
			return req, fds, nil
		}
		n, oobn, _, _, rerr := c.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if rights, err := unix.ParseUnixRights(&m); err == nil {
						fds = append(fds, rights...)
					}
				}
			}
		}
		req = append(req, buf[:n]...)
		if rerr != nil {
			if done, _ := requestDone(req); done {
				return req, fds, nil
			}
			return req, fds, rerr
		}
	}
}

// requestDone reports whether req holds a whole request.
func requestDone(req []byte) (bool, error) {
	end := bytes.IndexAny(req, "\x00\n")
	if end < 0 {
		return false, nil
	}
	switch scanCommand(req) {
	case "FILDES":
		return len(req) > end+1, nil // the byte the descriptor rides with
	case "INSTREAM":
		rest := req[end+1:]
		for {
			if len(rest) < 4 {
				return false, nil
			}
			n := int(binary.BigEndian.Uint32(rest))
			if n == 0 {
				return true, nil
			}
			if len(rest) < 4+n {
				return false, nil
			}
			rest = rest[4+n:]
		}
	}
	return true, nil
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
