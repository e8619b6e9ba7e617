package clamav

import (
	"fmt"
	"strings"
)

// Result is clamd's verdict on a stream. Signature is set iff Infected.
//
// A Result that is not infected means clean; it is only ever returned
// together with a nil error, and only for the exact reply "stream: OK".
type Result struct {
	Infected  bool
	Signature string
	// Backend names the clamd that judged the stream. Pool.Scan sets it;
	// Client.Scan leaves it empty (the Client is the backend).
	Backend string
}

const (
	replyOK       = "stream: OK"
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
// ErrProtocol.
func ParseReply(reply string) (Result, error) {
	res, kind, msg := parseReply(reply)
	if kind != nil {
		return Result{}, fmt.Errorf("%w%s", kind, msg)
	}
	return res, nil
}

// parseReply is ParseReply returning the error kind and the message to
// append to it, so that Scan can put both in an opError.
func parseReply(reply string) (res Result, kind error, msg string) {
	s := strings.TrimSuffix(reply, "\n")
	if s == replyOK {
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
	if len(s) > len(replyPrefix)+len(foundSuffix) &&
		strings.HasPrefix(s, replyPrefix) && strings.HasSuffix(s, foundSuffix) {
		sig := s[len(replyPrefix) : len(s)-len(foundSuffix)]
		if validSignature(sig) {
			return Result{Infected: true, Signature: sig}, nil, ""
		}
	}
	return Result{}, ErrProtocol, ": unexpected reply " + quoteReply(reply)
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
