package clamav

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// FILDES (clamd(8)), over a unix socket only:
//
//	"zFILDES\x00"                  the command
//	one byte, with the descriptor  as SCM_RIGHTS ancillary data
//
// clamd waits for a byte beyond the command to collect the descriptor
// that rides with it (clamdscan --fdpass sends a NUL), so both go in one
// sendmsg. clamd then reads the file itself through its copy of the
// descriptor, from offset 0 whatever the descriptor's offset (it reads with
// pread), and answers one NUL-terminated reply named after the descriptor
// number it got: "fd[12]: OK", "fd[12]: <sig> FOUND", "fd[12]: <text> ERROR".
//
// Limits: StreamMaxLength does not apply; MaxFileSize and MaxScanSize do,
// and with AlertExceedsMax a file over them is reported as
// "Heuristics.Limits.Exceeded.* FOUND", as it is under INSTREAM.
const fildesCmd = "zFILDES\x00"

// fildesMsg is the command and the byte the descriptor rides with.
var fildesMsg = []byte(fildesCmd + "\x00")

// ScanFile judges f, an open regular file whose size the caller saw as
// size, with the Client's Transport:
//
//   - FILDES passes f's descriptor and clamd reads the file as it is, all
//     of it; the caller checks afterwards that the file did not change
//     while it was scanned (the gate does, with fstat);
//   - INSTREAM streams the first size bytes of f (io.NewSectionReader), as
//     Scan does, without moving f's offset.
//
// With TransportAuto, a clamd that turns the descriptor down (a reply
// saying it received none, as when a security policy keeps clamd from
// receiving it, or UNKNOWN COMMAND) gets the same file streamed at once,
// and every later file too (Transport then says TransportInstream). With
// TransportFildes that reply is an ErrClamd error: no verdict.
//
// Results and errors are Scan's; a failure of FILDES's own step, such as
// f being closed, is ErrRead.
func (c *Client) ScanFile(ctx context.Context, f *os.File, size int64) (Result, error) {
	if c.Transport() == TransportFildes {
		res, reply, err := c.scanFildes(ctx, f)
		if err == nil || c.transport != TransportAuto || !fildesRefused(reply) {
			return res, err
		}
		c.refused.Store(true)
	}
	if f == nil {
		return c.Scan(ctx, nil)
	}
	return c.Scan(ctx, io.NewSectionReader(f, 0, size))
}

// fildesRefused reports whether reply, clamd's answer to FILDES, says it
// cannot take a descriptor at all, rather than anything about the file:
// "No file descriptor received. ERROR" (clamd 1.x; older ones said
// "FILDES: didn't receive file descriptor. ERROR"), or "UNKNOWN COMMAND"
// from a server without FILDES.
func fildesRefused(reply string) bool {
	s := strings.TrimSuffix(reply, "\n")
	return s == "UNKNOWN COMMAND" ||
		strings.HasSuffix(s, errorSuffix) && !strings.HasPrefix(s, "fd[") && strings.Contains(s, "file descriptor")
}

// scanFildes scans f with FILDES. It returns clamd's reply as read, for
// ScanFile's fallback.
func (c *Client) scanFildes(ctx context.Context, f *os.File) (Result, string, error) {
	k := c.newCall(ctx, "FILDES")
	if f == nil {
		return Result{}, "", k.fail(ErrRead, nil, ": nil file")
	}
	return c.exchange(ctx, k, true, func(conn net.Conn) error { return sendFildes(k, conn, f) })
}

// sendFildes writes the FILDES command with f's descriptor attached. The
// descriptor is used under f's own reference (SyscallConn), so a
// concurrent Close cannot swap in another file under the same number.
func sendFildes(k *call, conn net.Conn, f *os.File) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		// New refuses FILDES on anything but a unix socket.
		return k.fail(ErrUnavailable, nil, fmt.Sprintf(": FILDES needs a unix socket, not %T", conn))
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return k.fail(ErrRead, err, ": "+err.Error())
	}
	var n int
	var werr error
	if err := rc.Control(func(fd uintptr) {
		n, _, werr = uc.WriteMsgUnix(fildesMsg, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		// Control fails only when f is closed, with an error of package
		// internal/poll; report it the way os does.
		return k.fail(ErrRead, os.ErrClosed, ": "+os.ErrClosed.Error())
	}
	if werr != nil {
		return k.writeFailed(conn, werr)
	}
	if n != len(fildesMsg) {
		// Cannot happen on a fresh connection; never leave clamd with
		// half a command.
		return k.fail(ErrProtocol, nil, fmt.Sprintf(": sent %d of the %d bytes of FILDES", n, len(fildesMsg)))
	}
	return nil
}
