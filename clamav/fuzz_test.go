package clamav

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseReply: ParseReply never panics, returns a clean Result only for
// exactly "stream: OK" (with at most the tolerated "\n"), an infected one only
// for "stream: <sig> FOUND", and otherwise an error of exactly one kind.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
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
