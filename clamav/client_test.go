package clamav

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestCommands(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ping := func(c *Client) error { return c.Ping(context.Background()) }
	reload := func(c *Client) error { return c.Reload(context.Background()) }
	version := func(c *Client) error {
		v, err := c.Version(context.Background())
		if err == nil && v != "ClamAV 1.0.7/27470/Mon Nov 25 09:34:56 2024" {
			t.Errorf("Version() = %q", v)
		}
		return err
	}
	tests := []struct {
		name    string
		call    func(*Client) error
		handle  func(*fakeClamd, net.Conn)
		want    error // kind, nil for success
		timeout bool
	}{
		{"ping", ping, lineCommand("PING", "PONG\n"), nil, false},
		{"ping wrong reply", ping, lineCommand("PING", "PANG\n"), ErrProtocol, false},
		{"ping no reply", ping, lineCommand("PING", ""), ErrProtocol, false},
		{"ping error reply", ping, lineCommand("PING", "Something ERROR\n"), ErrClamd, false},
		{"ping never answers", ping, stall, ErrTimeout, true},
		{"version", version, lineCommand("VERSION", "ClamAV 1.0.7/27470/Mon Nov 25 09:34:56 2024\n"), nil, false},
		{"version empty", version, lineCommand("VERSION", ""), ErrProtocol, false},
		{"version garbage", version, lineCommand("VERSION", "PONG\n"), ErrProtocol, false},
		{"version two lines", version, lineCommand("VERSION", "ClamAV 1.0.7/27470\nClamAV 1.0.7/27471\n"), ErrProtocol, false},
		{"version never answers", version, stall, ErrTimeout, true},
		{"reload", reload, lineCommand("RELOAD", "RELOADING\n"), nil, false},
		{"reload wrong reply", reload, lineCommand("RELOAD", "OK\n"), ErrProtocol, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFake(t, tt.handle)
			c := f.client(t, 5*time.Second, 0) // robust to machine load
			if tt.timeout {
				c = f.client(t, timeout, 0)
			}
			start := time.Now()
			err := tt.call(c)
			elapsed := time.Since(start)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantKind(t, err, tt.want)
			if !strings.HasPrefix(err.Error(), "clamd unix:"+f.path+": ") {
				t.Errorf("message %q does not start with the address", err)
			}
			if tt.timeout && elapsed > timeout+time.Second {
				t.Errorf("took %v with Timeout %v", elapsed, timeout)
			}
		})
	}
}

func TestCommandsUnavailable(t *testing.T) {
	c, err := New(Options{Network: "unix", Address: t.TempDir() + "/none.sock", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wantKind(t, c.Ping(context.Background()), ErrUnavailable)
	_, err = c.Version(context.Background())
	wantKind(t, err, ErrUnavailable)
	wantKind(t, c.Reload(context.Background()), ErrUnavailable)
}

func TestCommandsCanceled(t *testing.T) {
	f := startFake(t, stall)
	c := f.client(t, 5*time.Second, 0)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err := c.Ping(ctx)
	wantKind(t, err, context.Canceled)
	if d := time.Since(start); d > time.Second {
		t.Errorf("returned %v after cancel", d)
	}
}
