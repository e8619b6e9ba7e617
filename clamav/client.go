// Package clamav is a client for ClamAV's clamd.
//
// Scan streams a file with INSTREAM using our own framing with large chunks
// (see instream.go); ScanFile passes an open file's descriptor with FILDES
// instead when the Transport allows it (see fildes.go), and clamd reads the
// file itself. Ping, Version and Reload go through
// github.com/baruwa-enterprise/clamd, whose ScanReader is not used because it
// sends 1 KiB chunks with a flush each.
//
// The package is a security control and fails closed: a Result is only
// clean when clamd sent exactly "stream: OK" after receiving the whole
// stream (or "fd[N]: OK" for the descriptor it was passed), and every other
// outcome is infected or an error. Errors wrap one of the sentinels in
// errors.go so callers can decide with errors.Is.
package clamav

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	baruwa "github.com/baruwa-enterprise/clamd"
)

// Options configure a Client.
type Options struct {
	Network   string        // "unix" or "tcp"
	Address   string        // socket path or host:port
	Timeout   time.Duration // whole operation: connect+stream+reply; required > 0
	ChunkSize int           // INSTREAM chunk size, default 1 MiB when 0
	Transport Transport     // how ScanFile reaches clamd; TransportAuto when ""
	// Sessions is how many connections to keep open between scans, in
	// clamd sessions (IDSESSION; see session.go); 0 dials clamd anew
	// for every scan.
	Sessions int
}

// Transport is how ScanFile gets a file's contents to clamd.
type Transport string

const (
	// TransportInstream streams the contents over the connection.
	TransportInstream Transport = "instream"
	// TransportFildes passes the open descriptor over a unix socket and
	// clamd reads the file itself (clamd on this machine only).
	TransportFildes Transport = "fildes"
	// TransportAuto is FILDES on a unix socket and INSTREAM over TCP; a
	// clamd that refuses descriptors is streamed to from then on.
	TransportAuto Transport = "auto"
)

const (
	defaultChunkSize = 1 << 20
	maxChunkSize     = 64 << 20
)

// Client talks to one clamd. It is safe for concurrent use; every operation
// has a connection of its own (a new one, or with Options.Sessions an idle
// one of an earlier scan), so concurrency is bounded only by the caller
// (and by clamd's MaxThreads/MaxQueue).
type Client struct {
	network   string
	address   string
	name      string // formatAddress(network, address)
	timeout   time.Duration
	chunkSize int
	transport Transport // as configured: instream, fildes or auto (resolved in New)

	// refused: in auto mode, clamd turned a descriptor down (see
	// ScanFile), so ScanFile streams from then on. Set once, never cleared.
	refused atomic.Bool

	// idle holds connections in a session between scans (session.go),
	// nil without Options.Sessions; noSessions: clamd answered a new
	// session without request ids, so scans dial anew from then on.
	idle       chan *session
	noSessions atomic.Bool

	// bufs holds *[]byte INSTREAM buffers of bufSize(chunkSize) bytes. A
	// buffer belongs to one Scan between Get and Put; nothing else is shared.
	bufs sync.Pool
}

// New validates opts and returns a Client. It does not contact clamd, so a
// clamd that starts later is fine.
func New(opts Options) (*Client, error) {
	if err := checkAddress(opts.Network, opts.Address); err != nil {
		return nil, fmt.Errorf("clamav: address %s: %w", formatAddress(opts.Network, opts.Address), err)
	}
	if opts.Timeout <= 0 {
		return nil, fmt.Errorf("clamav: timeout must be > 0, got %v", opts.Timeout)
	}
	cs := opts.ChunkSize
	if cs == 0 {
		cs = defaultChunkSize
	}
	if cs < 0 || cs > maxChunkSize {
		return nil, fmt.Errorf("clamav: chunk size must be between 1 and %d bytes, got %d", maxChunkSize, opts.ChunkSize)
	}
	tr := opts.Transport
	switch {
	case tr == "" || tr == TransportAuto:
		tr = TransportAuto
		if opts.Network != "unix" {
			tr = TransportInstream // descriptors do not cross TCP
		}
	case tr == TransportFildes && opts.Network != "unix":
		return nil, fmt.Errorf("clamav: transport fildes needs a unix socket, not %s", formatAddress(opts.Network, opts.Address))
	case tr != TransportInstream && tr != TransportFildes:
		return nil, fmt.Errorf("clamav: transport %q: want auto, instream or fildes", opts.Transport)
	}
	c := &Client{
		network:   opts.Network,
		address:   opts.Address,
		name:      formatAddress(opts.Network, opts.Address),
		timeout:   opts.Timeout,
		chunkSize: cs,
		transport: tr,
	}
	if opts.Sessions < 0 {
		return nil, fmt.Errorf("clamav: sessions must be >= 0, got %d", opts.Sessions)
	}
	if opts.Sessions > 0 {
		c.idle = make(chan *session, opts.Sessions)
	}
	c.bufs.New = func() any {
		b := make([]byte, bufSize(cs))
		return &b
	}
	return c, nil
}

// String returns the address for logs: "unix:/path" or "tcp://host:port".
func (c *Client) String() string { return c.name }

// Transport is how ScanFile reaches clamd now: TransportFildes or
// TransportInstream, never TransportAuto.
func (c *Client) Transport() Transport {
	if c.transport == TransportInstream || c.refused.Load() {
		return TransportInstream
	}
	return TransportFildes
}

// Ping checks that clamd answers PONG.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.command(ctx, "PING", func(ctx context.Context, bc *baruwa.Client) (string, error) {
		ok, err := bc.Ping(ctx)
		if err == nil && !ok {
			return "", replyError{ErrProtocol, ": reply is not PONG"}
		}
		return "", err
	})
	return err
}

// Version returns clamd's version line, e.g.
// "ClamAV 1.0.7/27470/Mon Nov 25 09:34:56 2024" (engine/database/date).
func (c *Client) Version(ctx context.Context) (string, error) {
	return c.command(ctx, "VERSION", func(ctx context.Context, bc *baruwa.Client) (string, error) {
		v, err := bc.Version(ctx)
		if err != nil {
			// baruwa's error for an empty reply; anything else it returns
			// that is not a network error is an "... ERROR" reply.
			if err.Error() == "Version not returned" {
				return "", replyError{ErrProtocol, ": empty reply"}
			}
			return "", err
		}
		v = strings.TrimSpace(v)
		if !strings.HasPrefix(v, "ClamAV ") || !printable(v) {
			return "", replyError{ErrProtocol, ": unexpected reply " + quoteReply(v)}
		}
		return v, nil
	})
}

// Reload asks clamd to reload its signature databases; clamd answers
// RELOADING at once and reloads in the background.
func (c *Client) Reload(ctx context.Context) error {
	_, err := c.command(ctx, "RELOAD", func(ctx context.Context, bc *baruwa.Client) (string, error) {
		ok, err := bc.Reload(ctx)
		if err == nil && !ok {
			return "", replyError{ErrProtocol, ": reply is not RELOADING"}
		}
		return "", err
	})
	return err
}

// replyError is how the command callbacks report a bad reply.
type replyError struct {
	kind error
	msg  string
}

func (e replyError) Error() string { return e.kind.Error() + e.msg }

// command runs one baruwa call under the Client's timeout and ctx.
//
// baruwa honours ctx only while dialing and sets its own read deadlines, so
// the call runs in a goroutine and command returns as soon as ctx is done or
// the deadline passes. The abandoned goroutine ends by itself within
// c.timeout, when its own read deadline passes.
func (c *Client) command(ctx context.Context, op string, fn func(context.Context, *baruwa.Client) (string, error)) (string, error) {
	k := c.newCall(ctx, op)
	cctx, cancel := context.WithDeadline(ctx, k.deadline)
	defer cancel()

	bc, err := baruwa.NewClient(c.network, c.address)
	if err != nil {
		// For unix sockets NewClient checks that the socket exists.
		if e := k.interrupted(""); e != nil {
			return "", e
		}
		return "", k.fail(ErrUnavailable, err, ": "+err.Error())
	}
	bc.SetConnTimeout(c.timeout)
	bc.SetCmdTimeout(c.timeout)
	bc.SetConnRetries(0)
	bc.SetConnSleep(time.Nanosecond) // baruwa sleeps after a dial timeout even without retries

	type result struct {
		s   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := fn(cctx, bc)
		done <- result{s, err}
	}()

	var res result
	select {
	case res = <-done:
	case <-cctx.Done():
		if e := k.interrupted(""); e != nil {
			return "", e
		}
		return "", k.fail(ErrTimeout, nil, fmt.Sprintf(" after %v", c.timeout))
	}
	if res.err == nil {
		return res.s, nil
	}
	if e := k.interrupted(""); e != nil {
		return "", e
	}
	var re replyError
	switch {
	case errors.As(res.err, &re):
		return "", k.fail(re.kind, nil, re.msg)
	case isTimeout(res.err):
		return "", k.fail(ErrTimeout, nil, fmt.Sprintf(" after %v", c.timeout))
	case isDialError(res.err):
		return "", k.fail(ErrUnavailable, res.err, ": "+res.err.Error())
	case isNetError(res.err):
		return "", k.fail(ErrProtocol, res.err, ": connection failed before a full reply: "+res.err.Error())
	default:
		// baruwa turns "<text> ERROR" replies into errors with text "<text>".
		return "", k.fail(ErrClamd, nil, ": "+quoteReply(res.err.Error()))
	}
}

func isNetError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// call carries what classifying an error needs: the caller's ctx and the
// deadlines of one operation.
type call struct {
	c      *Client
	op     string
	parent context.Context
	own    time.Time // now + Options.Timeout
	// deadline is the earlier of own and the parent's deadline.
	deadline time.Time
}

func (c *Client) newCall(ctx context.Context, op string) *call {
	own := time.Now().Add(c.timeout)
	k := &call{c: c, op: op, parent: ctx, own: own, deadline: own}
	if d, ok := ctx.Deadline(); ok && d.Before(own) {
		k.deadline = d
	}
	return k
}

// fail builds the operation's error.
func (k *call) fail(kind, cause error, msg string) error {
	return &opError{addr: k.c.name, op: k.op, kind: kind, msg: msg, cause: cause}
}

// interrupted returns the error for an operation stopped because the
// caller's ctx ended or a deadline passed, or nil if neither happened.
// phase, if set, says where: "while connecting", "while sending", ...
func (k *call) interrupted(phase string) error {
	if phase != "" {
		phase = " " + phase
	}
	if err := k.parent.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return k.fail(ErrTimeout, nil, ": context deadline exceeded"+phase)
		}
		return k.fail(context.Canceled, nil, phase)
	}
	now := time.Now()
	if !now.Before(k.own) {
		return k.fail(ErrTimeout, nil, fmt.Sprintf(" after %v%s", k.c.timeout, phase))
	}
	if !now.Before(k.deadline) {
		return k.fail(ErrTimeout, nil, ": context deadline exceeded"+phase)
	}
	return nil
}

// ioFailed classifies an I/O error that is not a protocol matter: ctx,
// deadline and timeouts. It returns nil for other errors.
func (k *call) ioFailed(phase string, err error) error {
	if e := k.interrupted(phase); e != nil {
		return e
	}
	if isTimeout(err) {
		return k.fail(ErrTimeout, nil, fmt.Sprintf(" after %v %s", k.c.timeout, phase))
	}
	return nil
}
