package clamav

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseReply: ParseReply never panics, returns a clean Result only for
// exactly "stream: OK" (with at most the tolerated "\n"), an infected one only
// for "stream: <sig> FOUND", and otherwise an error of exactly one kind. The
// FILDES parser keeps the same promises with "fd[N]: " for "stream: ".
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		"fd[11]: OK", "fd[11]: Eicar-Test-Signature FOUND", "fd[]: OK", "fd[1]: OK\n",
		"No file descriptor received. ERROR", "fd[9]: Not a regular file ERROR",
		"stream: OK", "stream: OK\n", "stream: ok", "OK", "", "\n",
		"stream: Eicar-Test-Signature FOUND",
		"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND",
		"stream:  FOUND", "stream: FOUND", "stream: OK FOUND",
		"INSTREAM size limit exceeded. ERROR", "stream: x ERROR", " ERROR",
		"stream: OK\nstream: OK", "stream: OK\x00", "1: stream: OK",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		checkFildesReply(t, reply)
		res, err := ParseReply(reply)
		body := strings.TrimSuffix(reply, "\n")
		if err != nil {
			if res != (Result{}) {
				t.Fatalf("ParseReply(%q) = %+v with error %v", reply, res, err)
			}
			n := 0
			for _, k := range []error{ErrProtocol, ErrSizeLimit, ErrClamd} {
				if errors.Is(err, k) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("ParseReply(%q) error %v wraps %d kinds", reply, err, n)
			}
			if strings.ContainsAny(err.Error(), "\x00\r\n") {
				t.Fatalf("ParseReply(%q) error not one line: %q", reply, err)
			}
			return
		}
		if !res.Infected {
			if res.Signature != "" || body != "stream: OK" {
				t.Fatalf("ParseReply(%q) = clean %+v", reply, res)
			}
			return
		}
		if res.Signature == "" || strings.ContainsAny(res.Signature, " \x00\r\n\t") ||
			body != "stream: "+res.Signature+" FOUND" {
			t.Fatalf("ParseReply(%q) = %+v", reply, res)
		}
	})
}

// checkFildesReply is FuzzParseReply's check of the FILDES parser.
func checkFildesReply(t *testing.T, reply string) {
	res, kind, msg := parseReply(reply, true)
	body := strings.TrimSuffix(reply, "\n")
	if kind != nil {
		if res != (Result{}) {
			t.Fatalf("parseReply(%q, fildes) = %+v with error %v", reply, res, kind)
		}
		if kind != ErrProtocol && kind != ErrSizeLimit && kind != ErrClamd {
			t.Fatalf("parseReply(%q, fildes) kind %v", reply, kind)
		}
		if strings.ContainsAny(msg, "\x00\r\n") {
			t.Fatalf("parseReply(%q, fildes) message not one line: %q", reply, msg)
		}
		return
	}
	n := nameLen(body, true)
	if n == 0 || !strings.HasPrefix(body, "fd[") || body[n-3:n] != "]: " {
		t.Fatalf("parseReply(%q, fildes) = %+v without an fd[N] name", reply, res)
	}
	for _, c := range body[3 : n-3] {
		if c < '0' || c > '9' {
			t.Fatalf("parseReply(%q, fildes) = %+v with a bad descriptor number", reply, res)
		}
	}
	rest := body[n:]
	if !res.Infected {
		if res.Signature != "" || rest != "OK" {
			t.Fatalf("parseReply(%q, fildes) = clean %+v", reply, res)
		}
		return
	}
	if res.Signature == "" || strings.ContainsAny(res.Signature, " \x00\r\n\t") || rest != res.Signature+" FOUND" {
		t.Fatalf("parseReply(%q, fildes) = %+v", reply, res)
	}
}
