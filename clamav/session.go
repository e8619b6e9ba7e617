package clamav

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Sessions (clamd(8) IDSESSION):
//
//	"zIDSESSION\x00"               once, on a new connection; no reply
//	"zFILDES\x00" ... / "zINSTREAM\x00" ...   as on a connection of their own
//	"<id>: fd[12]: OK\x00"         each reply names its request, from 1
//	"zEND\x00"                     ends the session (or just close)
//
// With Options.Sessions > 0 a scan reuses the connection of an earlier
// one instead of dialing clamd anew, which spares both sides the socket,
// connect and accept, and under load the wakeups of clamd's accepting
// thread. A connection goes back to the idle ones only after an exchange
// that ended well: clamd's whole reply, carrying the request's id, and a
// clean verdict (after a FOUND, clamd with AllMatchScanning may send more
// replies, so that connection is closed), with the scan's deadline not
// passed. Anything else, an error, a timeout, a cancelled scan, closes it.
// Each scan still runs under its own deadline. An idle connection is
// used again only within sessionIdle (well inside clamd's IdleTimeout,
// 30 s by default) and when clamd has not closed it meanwhile (a peek
// that must find nothing to read): else it is closed and a new one
// dialed. Should clamd still close it just as it is taken, a FILDES
// request that got no byte of reply is sent once more on a new
// connection (a stream is not: it may have been read in part). A reply
// without the request's id is never a verdict: it is
// ErrProtocol, or clamd's own ERROR; a clamd that answers a new session
// so is scanned without sessions from then on.

// sessionCmd starts a session.
const sessionCmd = "zIDSESSION\x00"

// sessionIdle is how long a connection may wait unused and still be
// used again.
const sessionIdle = 5 * time.Second

// session is one connection in a session, between scans.
type session struct {
	conn net.Conn
	id   int       // id of the next request
	used time.Time // when it went idle
}

// takeSession returns an idle session fit for a scan, or nil.
func (c *Client) takeSession() *session {
	for {
		var s *session
		select {
		case s = <-c.idle:
		default:
			return nil
		}
		if time.Since(s.used) < sessionIdle && alive(s.conn) {
			return s
		}
		s.conn.Close()
	}
}

// putSession keeps s for a later scan, or closes it when enough are idle.
func (c *Client) putSession(s *session) {
	s.used = time.Now()
	s.conn.SetDeadline(time.Time{}) // the next scan sets its own
	select {
	case c.idle <- s:
	default:
		s.conn.Close()
	}
}

// alive reports whether conn, idle between requests, has nothing to read
// and is still open: clamd closes a session it timed out.
func alive(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	ok = false
	if err := rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = err == unix.EAGAIN
		return true // never wait
	}); err != nil {
		return false
	}
	return ok
}

// errNoSessionID: a reply in a session without the id of the request.
var errNoSessionID = errors.New("no session id")

// sessionReply strips "<id>: " from a reply read in a session.
func sessionReply(reply string, id int) (string, error) {
	p := strconv.Itoa(id) + ": "
	if !strings.HasPrefix(reply, p) {
		return reply, fmt.Errorf("%w %d", errNoSessionID, id)
	}
	return reply[len(p):], nil
}
