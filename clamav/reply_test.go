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

// TestParseFildesReply: a FILDES reply is named after the descriptor
// clamd got, "fd[N]: ", and follows the INSTREAM rules otherwise; neither
// name is accepted for the other command.
func TestParseFildesReply(t *testing.T) {
	eicar := Result{Infected: true, Signature: "Eicar-Test-Signature"}
	tests := []struct {
		reply string
		want  Result
		err   error // kind, nil for a Result
	}{
		{reply: "fd[11]: OK"},
		{reply: "fd[0]: OK\n"},
		{reply: "fd[2147483647]: OK"},
		{reply: "fd[11]: Eicar-Test-Signature FOUND", want: eicar},
		{reply: "fd[11]: Heuristics.Limits.Exceeded.MaxFileSize FOUND",
			want: Result{Infected: true, Signature: "Heuristics.Limits.Exceeded.MaxFileSize"}},
		{reply: "fd[9]: Not a regular file ERROR", err: ErrClamd},
		{reply: "No file descriptor received. ERROR", err: ErrClamd},

		{reply: "stream: OK", err: ErrProtocol},
		{reply: "stream: Eicar-Test-Signature FOUND", err: ErrProtocol},
		{reply: "fd[]: OK", err: ErrProtocol},
		{reply: "fd[x]: OK", err: ErrProtocol},
		{reply: "fd[-1]: OK", err: ErrProtocol},
		{reply: "fd[12345678901]: OK", err: ErrProtocol},
		{reply: "fd[11]:OK", err: ErrProtocol},
		{reply: "fd[11] : OK", err: ErrProtocol},
		{reply: "fd[11]:  OK", err: ErrProtocol},
		{reply: "fd[11]: ok", err: ErrProtocol},
		{reply: "fd11: OK", err: ErrProtocol},
		{reply: "FD[11]: OK", err: ErrProtocol},
		{reply: "fd[11]: OK\x00", err: ErrProtocol},
		{reply: "fd[11]: OK\nfd[11]: OK", err: ErrProtocol},
		{reply: "fd[11]:  FOUND", err: ErrProtocol},
		{reply: "fd[11]: a b FOUND", err: ErrProtocol},
		{reply: "/srv/in/f: OK", err: ErrProtocol},
		{reply: "UNKNOWN COMMAND", err: ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(quote(tt.reply), func(t *testing.T) {
			got, kind, msg := parseReply(tt.reply, true)
			if tt.err == nil {
				if kind != nil || got != tt.want {
					t.Fatalf("parseReply(%q, fildes) = %+v, %v%s; want %+v", tt.reply, got, kind, msg, tt.want)
				}
				if _, err := ParseReply(tt.reply); err == nil {
					t.Errorf("ParseReply(%q) (INSTREAM) accepted a FILDES reply", tt.reply)
				}
				return
			}
			if got != (Result{}) || kind != tt.err {
				t.Errorf("parseReply(%q, fildes) = %+v, %v%s; want %v", tt.reply, got, kind, msg, tt.err)
			}
		})
	}
}

func TestFildesRefused(t *testing.T) {
	for reply, want := range map[string]bool{
		"No file descriptor received. ERROR":            true,
		"FILDES: didn't receive file descriptor. ERROR": true,
		"UNKNOWN COMMAND":                               true,
		"UNKNOWN COMMAND\n":                             true,
		"fd[9]: Not a regular file ERROR":               false,
		"fd[9]: bad file descriptor ERROR":              false, // about the file, not FILDES
		"fd[9]: OK":                                     false,
		"No file descriptor received.":                  false,
		"PROTOCOL ERROR":                                false,
		"":                                              false,
	} {
		if got := fildesRefused(reply); got != want {
			t.Errorf("fildesRefused(%q) = %v; want %v", reply, got, want)
		}
	}
}
