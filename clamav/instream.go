package clamav

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// INSTREAM framing (clamd(8)):
//
//	"zINSTREAM\x00"
//	<uint32 BE length><data>   repeated, ChunkSize bytes each but the last
//	<uint32 BE 0>              end of stream
//
// and clamd answers one reply terminated by NUL (because of the "z" prefix).
const (
	instreamCmd = "zINSTREAM\x00"
	hdrOff      = len(instreamCmd) // where a chunk header starts in the buffer
	dataOff     = hdrOff + 4       // where chunk data starts in the buffer
	maxReplyLen = 4096             // longer replies are a protocol error
)

// bufSize is the buffer Scan needs: the command, one chunk header, one
// chunk, and the terminating zero-length header.
func bufSize(chunkSize int) int { return dataOff + chunkSize + 4 }

// aLongTimeAgo is a deadline in the past, to abort pending I/O.
var aLongTimeAgo = time.Unix(1, 0)

// Scan streams all of r to clamd with INSTREAM and returns its verdict,
// whatever the Transport (that is ScanFile's choice).
//
// The whole operation (connect, stream, reply) is bounded by
// Options.Timeout and by ctx. Each chunk (header and data) is one write; the
// command rides with the first chunk and the end-of-stream marker with the
// last, so a small file costs one write and one read.
//
// A clean Result is returned only when every byte of r was sent and clamd
// replied exactly "stream: OK". Errors wrap ErrRead for a failure reading r,
// context.Canceled when ctx was canceled, and otherwise exactly one of
// ErrUnavailable, ErrTimeout, ErrProtocol, ErrSizeLimit, ErrClamd.
func (c *Client) Scan(ctx context.Context, r io.Reader) (Result, error) {
	k := c.newCall(ctx, "")
	if r == nil {
		return Result{}, k.fail(ErrRead, nil, ": nil reader")
	}
	res, _, err := c.exchange(ctx, k, false, func(conn net.Conn) error { return c.send(k, conn, r) })
	return res, err
}

// exchange runs one scan: dial (or, with sessions, take an idle
// connection), send (which writes the request and returns an error made
// by k), then read and parse the one reply, under k's deadline and ctx.
// fildes says which name the reply carries ("fd[N]: " rather than
// "stream: "). It returns clamd's reply as read (without a session's
// id), "" when none arrived.
func (c *Client) exchange(ctx context.Context, k *call, fildes bool, send func(net.Conn) error) (Result, string, error) {
	cctx, cancel := context.WithDeadline(ctx, k.deadline)
	defer cancel()

	sessions := c.idle != nil && !c.noSessions.Load()
	if sessions {
		if s := c.takeSession(); s != nil {
			res, reply, err, keep, gone := c.round(cctx, k, s.conn, s.id, fildes, send)
			if keep {
				s.id++
				c.putSession(s)
			} else {
				s.conn.Close()
			}
			if !fildes || !gone {
				return res, reply, err
			}
			// Closed without a word: clamd ended the idle session just
			// as it was taken (or died: then dialing fails). No verdict
			// came; a FILDES request can be sent again as it was, once,
			// on a new connection. (A stream may be half read.)
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(cctx, c.network, c.address)
	if err != nil {
		if e := k.ioFailed("while connecting", err); e != nil {
			return Result{}, "", e
		}
		return Result{}, "", k.fail(ErrUnavailable, err, ": "+err.Error())
	}
	id := 0
	if sessions {
		id = 1
	}
	res, reply, err, keep, _ := c.round(cctx, k, conn, id, fildes, send)
	if keep && sessions {
		c.putSession(&session{conn: conn, id: id + 1})
	} else {
		conn.Close()
	}
	return res, reply, err
}

// round runs one request on conn: in a session when id > 0 (the id of
// this request, 1 on a new connection, which then first starts the
// session). keep reports whether conn may serve another request: the
// exchange ended with a clean verdict, whole, within its deadline. gone
// reports that clamd closed conn without a byte of reply, before its
// deadline: no verdict, nor any word from clamd.
func (c *Client) round(ctx context.Context, k *call, conn net.Conn, id int, fildes bool, send func(net.Conn) error) (res Result, reply string, err error, keep, gone bool) {
	if err := conn.SetDeadline(k.deadline); err != nil {
		return Result{}, "", k.fail(ErrUnavailable, err, ": "+err.Error()), false, false
	}
	// Registered after SetDeadline, so an already-canceled ctx still wins.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	defer func() {
		if !stop() {
			keep = false // its deadline was pulled in: never again
		}
	}()

	if id == 1 {
		if _, err := conn.Write([]byte(sessionCmd)); err != nil {
			if e := k.ioFailed("while sending", err); e != nil {
				return Result{}, "", e, false, false
			}
			return Result{}, "", k.fail(ErrUnavailable, err, ": starting a session: "+err.Error()), false, false
		}
	}
	if err := send(conn); err != nil {
		// A write that failed as clamd had closed conn: ErrProtocol
		// (writeFailed) with no reply read.
		return Result{}, "", err, false, errors.Is(err, ErrProtocol) && k.interrupted("") == nil
	}

	reply, trailing, err := readReply(conn)
	if err != nil {
		if e := k.ioFailed("waiting for reply", err); e != nil {
			return Result{}, reply, e, false, false
		}
		switch {
		case errors.Is(err, errReplyTooLong):
			return Result{}, reply, k.fail(ErrProtocol, nil, fmt.Sprintf(": no NUL in the first %d bytes of the reply: %s", maxReplyLen, quoteReply(reply))), false, false
		case reply == "":
			return Result{}, reply, k.fail(ErrProtocol, err, ": connection closed without a reply: "+err.Error()), false, true
		default:
			return Result{}, reply, k.fail(ErrProtocol, err, ": reply not NUL-terminated: "+quoteReply(reply)), false, false
		}
	}
	if id > 0 {
		var serr error
		if reply, serr = sessionReply(reply, id); serr != nil {
			if id == 1 {
				c.noSessions.Store(true) // no ids: a clamd without sessions
			}
			// Not returned as the reply: it says nothing of the
			// descriptor (see ScanFile's fallback).
			if _, kind, msg := parseReply(reply, fildes); kind == ErrClamd || kind == ErrSizeLimit {
				return Result{}, "", k.fail(kind, nil, msg), false, false
			}
			return Result{}, "", k.fail(ErrProtocol, nil, fmt.Sprintf(": reply without the session's request id %d: %s", id, quoteReply(reply))), false, false
		}
	}
	res, kind, msg := parseReply(reply, fildes)
	if kind != nil {
		return Result{}, reply, k.fail(kind, nil, msg), false, false
	}
	if trailing && !res.Infected {
		// Only ever one reply per scan; never call extra data clean.
		// (Infected stays infected: with AllMatchScanning clamd may send
		// one FOUND reply per signature.)
		return Result{}, reply, k.fail(ErrProtocol, nil, ": unexpected data after reply "+quoteReply(reply)), false, false
	}
	return res, reply, nil, !trailing && !res.Infected, false
}

// send writes the INSTREAM command, all of r in chunks, and the end marker.
func (c *Client) send(k *call, conn net.Conn, r io.Reader) error {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp
	copy(buf, instreamCmd)

	start := 0 // the first write carries the command
	for {
		n, eof, rerr := fill(r, buf[dataOff:dataOff+c.chunkSize])
		if rerr != nil {
			return k.fail(ErrRead, rerr, ": "+rerr.Error())
		}
		// n == 0 only at EOF, and then this header is the end marker.
		binary.BigEndian.PutUint32(buf[hdrOff:], uint32(n))
		end := dataOff + n
		if eof && n > 0 {
			binary.BigEndian.PutUint32(buf[end:], 0)
			end += 4
		}
		if _, err := conn.Write(buf[start:end]); err != nil {
			return k.writeFailed(conn, err)
		}
		if eof {
			return nil
		}
		start = hdrOff
	}
}

// writeFailed classifies a failed write. clamd closes the connection when a
// stream exceeds StreamMaxLength, after sending its reply; prefer that reply
// to the broken pipe it causes.
func (k *call) writeFailed(conn net.Conn, werr error) error {
	if e := k.ioFailed("while sending", werr); e != nil {
		return e
	}
	reply, _, rerr := readReply(conn)
	if rerr != nil {
		if e := k.ioFailed("while sending", rerr); e != nil {
			return e
		}
		return k.fail(ErrProtocol, werr, ": connection closed while sending: "+werr.Error())
	}
	// The kind of an "... ERROR" reply does not depend on the scan's name.
	if _, kind, msg := parseReply(reply, false); kind == ErrSizeLimit || kind == ErrClamd {
		return k.fail(kind, nil, msg)
	}
	// A verdict on a stream we did not finish sending is not a verdict.
	return k.fail(ErrProtocol, werr, fmt.Sprintf(": reply %s before end of stream (%v)", quoteReply(reply), werr))
}

// errReplyTooLong: maxReplyLen bytes arrived without a NUL.
var errReplyTooLong = errors.New("reply too long")

// replyBufs are readReply's buffers: a reply is a few dozen bytes, and a
// buffer of maxReplyLen made for each was a quarter of all clamfuse
// allocated while opening 100 000 small files (issue #12: garbage the
// collector, paced for the live nodes, collects often).
var replyBufs = sync.Pool{New: func() any { return new([maxReplyLen]byte) }}

// readReply reads one NUL-terminated reply. It returns the reply without the
// NUL, and whether more bytes followed it in what was read. On error, reply
// holds what was read so far.
func readReply(conn net.Conn) (reply string, trailing bool, err error) {
	bp := replyBufs.Get().(*[maxReplyLen]byte)
	defer replyBufs.Put(bp) // the reply is a copy
	buf := bp[:]
	n := 0
	for {
		m, rerr := conn.Read(buf[n:])
		if i := bytes.IndexByte(buf[n:n+m], 0); i >= 0 {
			end := n + i
			return string(buf[:end]), end+1 < n+m, nil
		}
		n += m
		if rerr != nil {
			return string(buf[:n]), false, rerr
		}
		if n == len(buf) {
			return string(buf[:n]), false, errReplyTooLong
		}
	}
}

// fill reads from r until p is full or r reports io.EOF (eof is then
// true). Unlike io.ReadFull it treats only io.EOF itself as the end: an
// io.ErrUnexpectedEOF from r is a read error, not a short file.
func fill(r io.Reader, p []byte) (n int, eof bool, err error) {
	zero := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		if m < 0 || m > len(p)-n {
			return n, false, fmt.Errorf("reader returned invalid count %d", m)
		}
		n += m
		switch {
		case err == io.EOF:
			return n, true, nil
		case err != nil:
			return n, false, err
		case m == 0:
			if zero++; zero >= 100 {
				return n, false, io.ErrNoProgress
			}
		default:
			zero = 0
		}
	}
	return n, false, nil
}
