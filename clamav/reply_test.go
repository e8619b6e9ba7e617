package clamav

import (
	"strings"
	"testing"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		reply string
		want  Result
		err   error // kind, nil for a Result
	}{
		// Clean: only this, with at most one "\n" from the "n" prefix.
		{reply: "stream: OK"},
		{reply: "stream: OK\n"},

		// Infected.
		{reply: "stream: Eicar-Test-Signature FOUND", want: Result{Infected: true, Signature: "Eicar-Test-Signature"}},
		{reply: "stream: Win.Test.EICAR_HDB-1 FOUND\n", want: Result{Infected: true, Signature: "Win.Test.EICAR_HDB-1"}},
		{reply: "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND", want: Result{Infected: true, Signature: "Heuristics.Limits.Exceeded.MaxFileSize"}},
		{reply: "stream: Eicar-Test-Signature(44d88612fea8a8f36de82e1278abb02f:68) FOUND",
			want: Result{Infected: true, Signature: "Eicar-Test-Signature(44d88612fea8a8f36de82e1278abb02f:68)"}},
		{reply: "stream: OK FOUND", want: Result{Infected: true, Signature: "OK"}},

		// clamd errors.
		{reply: "INSTREAM size limit exceeded. ERROR", err: ErrSizeLimit},
		{reply: "INSTREAM size limit exceeded. ERROR\n", err: ErrSizeLimit},
		{reply: "stream: Can't allocate memory ERROR", err: ErrClamd},
		{reply: "UNKNOWN COMMAND ERROR", err: ErrClamd},
		{reply: "stream: OK ERROR", err: ErrClamd},

		// Everything else is a protocol error.
		{reply: "", err: ErrProtocol},
		{reply: "\n", err: ErrProtocol},
		{reply: "stream: ok", err: ErrProtocol},
		{reply: "STREAM: OK", err: ErrProtocol},
		{reply: "OK", err: ErrProtocol},
		{reply: "stream:OK", err: ErrProtocol},
		{reply: "stream:  OK", err: ErrProtocol},
		{reply: " stream: OK", err: ErrProtocol},
		{reply: "stream: OK ", err: ErrProtocol},
		{reply: "stream: OK\n\n", err: ErrProtocol},
		{reply: "stream: OK\r\n", err: ErrProtocol},
		{reply: "stream: OK\x00", err: ErrProtocol},
		{reply: "stream: OK\nstream: OK", err: ErrProtocol},
		{reply: "stream: OK\nstream: Eicar FOUND", err: ErrProtocol},
		{reply: "stream: OK extra", err: ErrProtocol},
		{reply: "1: stream: OK", err: ErrProtocol}, // IDSESSION form
		{reply: "/tmp/f: OK", err: ErrProtocol},
		{reply: "stream: FOUND", err: ErrProtocol},
		{reply: "stream:  FOUND", err: ErrProtocol},
		{reply: "stream:   FOUND", err: ErrProtocol},
		{reply: "stream: a b FOUND", err: ErrProtocol},
		{reply: "stream: Eicar\tSig FOUND", err: ErrProtocol},
		{reply: "stream: Eicar\x00 FOUND", err: ErrProtocol},
		{reply: "stream: Eicar FOUND ", err: ErrProtocol},
		{reply: "stream: Eicar found", err: ErrProtocol},
		{reply: "Eicar FOUND", err: ErrProtocol},
		{reply: "stream: \xc3\xa9 FOUND", err: ErrProtocol},
		{reply: "ERROR", err: ErrProtocol},
		{reply: " ERROR", err: ErrProtocol},
		{reply: "size limit exceeded. error", err: ErrProtocol},
		{reply: "PONG", err: ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(quote(tt.reply), func(t *testing.T) {
			got, err := ParseReply(tt.reply)
			if tt.err == nil {
				if err != nil || got != tt.want {
					t.Fatalf("ParseReply(%q) = %+v, %v; want %+v", tt.reply, got, err, tt.want)
				}
				return
			}
			if got != (Result{}) {
				t.Errorf("ParseReply(%q) = %+v with error", tt.reply, got)
			}
			wantKind(t, err, tt.err)
		})
	}
}

func TestParseReplyMessage(t *testing.T) {
	_, err := ParseReply("stream: ok\x01" + strings.Repeat("x", 1000))
	msg := err.Error()
	if len(msg) > 400 || !strings.Contains(msg, `\x01`) || !strings.HasSuffix(msg, "...") {
		t.Errorf("message not escaped and truncated: %q", msg)
	}
	_, err = ParseReply("INSTREAM size limit exceeded. ERROR")
	if want := `clamd size limit exceeded: "INSTREAM size limit exceeded. ERROR"`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}
