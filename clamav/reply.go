package clamav

import (
	"fmt"
	"strings"
)

// Result is clamd's verdict on a file. Signature is set iff Infected.
//
// A Result that is not infected means clean; it is only ever returned
// together with a nil error, and only for the exact reply "stream: OK"
// (INSTREAM) or "fd[N]: OK" (FILDES).
type Result struct {
	Infected  bool
	Signature string
	// Backend names the clamd that judged the file. Pool.Scan and
	// Pool.ScanFile set it; a Client leaves it empty (the Client is the
	// backend).
	Backend string
}

const (
	replyOK       = "OK"
	replyPrefix   = "stream: "
	foundSuffix   = " FOUND"
	errorSuffix   = " ERROR"
	sizeLimitText = "size limit exceeded"
)

// ParseReply parses one clamd INSTREAM reply, without its terminating NUL.
// A single trailing "\n" (the reply delimiter of the "n" command prefix) is
// tolerated. The rules are strict:
//
//	"stream: OK"                    clean
//	"stream: <sig> FOUND"           infected with <sig> (printable ASCII, no spaces)
//	"<text> ERROR" mentioning "size limit exceeded"   ErrSizeLimit
//	"<text> ERROR"                  ErrClamd
//	anything else                   ErrProtocol
//
// Anything with control characters, extra lines, other spacing or case is
// ErrProtocol. A FILDES reply follows the same rules with "fd[N]: " (N the
// descriptor number in clamd) in place of "stream: ".
func ParseReply(reply string) (Result, error) {
	res, kind, msg := parseReply(reply, false)
	if kind != nil {
		return Result{}, fmt.Errorf("%w%s", kind, msg)
	}
	return res, nil
}

// parseReply is ParseReply returning the error kind and the message to
// append to it, so that a scan can put both in an opError. fildes selects
// the name the reply must start with: "fd[N]: " rather than "stream: ".
func parseReply(reply string, fildes bool) (res Result, kind error, msg string) {
	s := strings.TrimSuffix(reply, "\n")
	n := nameLen(s, fildes)
	if n > 0 && s[n:] == replyOK {
		return Result{}, nil, ""
	}
	if !printable(s) {
		return Result{}, ErrProtocol, ": reply with control or non-ASCII characters: " + quoteReply(reply)
	}
	if len(s) > len(errorSuffix) && strings.HasSuffix(s, errorSuffix) {
		if strings.Contains(s, sizeLimitText) {
			return Result{}, ErrSizeLimit, ": " + quoteReply(s)
		}
		return Result{}, ErrClamd, ": " + quoteReply(s)
	}
	if n > 0 && len(s) > n+len(foundSuffix) && strings.HasSuffix(s, foundSuffix) {
		sig := s[n : len(s)-len(foundSuffix)]
		if validSignature(sig) {
			return Result{Infected: true, Signature: sig}, nil, ""
		}
	}
	return Result{}, ErrProtocol, ": unexpected reply " + quoteReply(reply)
}

// maxFdDigits bounds N in "fd[N]: " (a C int).
const maxFdDigits = 10

// nameLen returns the length of the name a scan reply starts with:
// "stream: " for INSTREAM, "fd[N]: " with N decimal digits for FILDES;
// 0 when s does not start with it.
func nameLen(s string, fildes bool) int {
	if !fildes {
		if strings.HasPrefix(s, replyPrefix) {
			return len(replyPrefix)
		}
		return 0
	}
	const open, closing = "fd[", "]: "
	if !strings.HasPrefix(s, open) {
		return 0
	}
	i := len(open)
	for i < len(s) && i < len(open)+maxFdDigits && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == len(open) || !strings.HasPrefix(s[i:], closing) {
		return 0
	}
	return i + len(closing)
}

// printable reports whether s is printable ASCII (spaces allowed).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// validSignature reports whether sig looks like a ClamAV signature name,
// e.g. "Win.Test.EICAR_HDB-1" or, with ExtendedDetectionInfo,
// "Eicar-Test-Signature(44d88612fea8a8f36de82e1278abb02f:68)".
func validSignature(sig string) bool {
	if sig == "" {
		return false
	}
	for i := 0; i < len(sig); i++ {
		if c := sig[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
