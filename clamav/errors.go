package clamav

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
)

// Every non-nil error returned by a Client method wraps exactly one of the
// following (test with errors.Is), or context.Canceled when the caller's
// context was canceled, or ErrRead when Scan could not read its input (or
// ScanFile could not pass its file).
var (
	// ErrUnavailable: clamd could not be reached (dial failed, socket missing).
	ErrUnavailable = errors.New("clamd unavailable")
	// ErrTimeout: Options.Timeout or the caller's context deadline passed,
	// whatever phase the operation was in.
	ErrTimeout = errors.New("clamd timeout")
	// ErrProtocol: the reply was garbled, unknown, not NUL-terminated, too
	// long, or the connection closed before a full reply arrived.
	ErrProtocol = errors.New("clamd protocol error")
	// ErrSizeLimit: clamd replied "INSTREAM size limit exceeded. ERROR"
	// (the stream is larger than clamd's StreamMaxLength).
	ErrSizeLimit = errors.New("clamd size limit exceeded")
	// ErrClamd: clamd replied with any other "... ERROR".
	ErrClamd = errors.New("clamd error")
	// ErrRead: Scan could not read the io.Reader it was given, or ScanFile
	// could not pass the file's descriptor (closed). It is a local fault,
	// not a clamd one; the underlying error is wrapped as well.
	ErrRead = errors.New("reading file")
)

// opError is the error type returned by Client methods.
//
// Its message is a single line: "clamd <addr>: [<op>: ]<kind><msg>", e.g.
// "clamd unix:/run/clamd.sock: clamd timeout after 2s waiting for reply".
type opError struct {
	addr  string // Client.String()
	op    string // clamd command: "" for INSTREAM (Scan), "FILDES", "PING"...
	kind  error  // one of the sentinels above, or context.Canceled
	msg   string // detail after kind, starting with its own separator; may be ""
	cause error  // underlying error, reachable with errors.Is/As; may be nil
}

func (e *opError) Error() string {
	var b strings.Builder
	b.WriteString("clamd ")
	b.WriteString(e.addr)
	b.WriteString(": ")
	if e.op != "" {
		b.WriteString(e.op)
		b.WriteString(": ")
	}
	b.WriteString(e.kind.Error())
	b.WriteString(e.msg)
	return oneLine.Replace(b.String())
}

func (e *opError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// oneLine keeps messages on one log line whatever a cause contains.
var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// isTimeout reports whether err is an I/O deadline error.
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isDialError reports whether err comes from establishing the connection.
func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// maxQuoted bounds how much of a reply goes into an error message.
const maxQuoted = 256

// quoteReply quotes (and truncates) a clamd reply for an error message.
func quoteReply(s string) string {
	if len(s) > maxQuoted {
		return quote(s[:maxQuoted]) + "..."
	}
	return quote(s)
}

// quote is strconv.Quote restricted to ASCII output, so that control
// characters and invalid UTF-8 from the wire never reach a log verbatim.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c >= 0x7f:
			const hex = "0123456789abcdef"
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// kinds lists every error kind a Client method can return, for tests and
// for the "exactly one" invariant.
var kinds = []error{ErrUnavailable, ErrTimeout, ErrProtocol, ErrSizeLimit, ErrClamd, ErrRead, context.Canceled}
