package clamav

import (
	"strings"
	"testing"
	"time"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in            string
		network, addr string // empty network: error
	}{
		{"/run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"unix:/run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl"},
		{"tcp://127.0.0.1:3310", "tcp", "127.0.0.1:3310"},
		{"tcp://localhost:3310", "tcp", "localhost:3310"},
		{"tcp://[::1]:3310", "tcp", "[::1]:3310"},
		{"", "", ""},
		{"clamd.sock", "", ""},
		{"unix:clamd.sock", "", ""},
		{"unix:", "", ""},
		{"unix:///run/clamd.sock", "", ""},
		{"unix:/" + strings.Repeat("x", 200), "", ""},
		{"/run/clamd sock", "", ""},
		{"tcp://127.0.0.1", "", ""},
		{"tcp://:3310", "", ""},
		{"tcp://127.0.0.1:0", "", ""},
		{"tcp://127.0.0.1:65536", "", ""},
		{"tcp://127.0.0.1:clamd", "", ""},
		{"tcp://127.0.0.1:3310/", "", ""},
		{"tcp:127.0.0.1:3310", "", ""},
		{"127.0.0.1:3310", "", ""},
		{"udp://127.0.0.1:3310", "", ""},
	}
	for _, tt := range tests {
		network, addr, err := ParseAddress(tt.in)
		if tt.network == "" {
			if err == nil {
				t.Errorf("ParseAddress(%q) = %q, %q; want error", tt.in, network, addr)
			} else if !strings.Contains(err.Error(), quote(tt.in)) {
				t.Errorf("ParseAddress(%q) error %q does not name the input", tt.in, err)
			}
			continue
		}
		if err != nil || network != tt.network || addr != tt.addr {
			t.Errorf("ParseAddress(%q) = %q, %q, %v; want %q, %q", tt.in, network, addr, err, tt.network, tt.addr)
		}
	}
}

func TestNew(t *testing.T) {
	ok := Options{Network: "unix", Address: "/run/clamd.sock", Timeout: time.Second}
	tests := []struct {
		name  string
		edit  func(*Options)
		valid bool
	}{
		{"ok", func(*Options) {}, true},
		{"tcp", func(o *Options) { o.Network, o.Address = "tcp", "127.0.0.1:3310" }, true},
		{"chunk 1", func(o *Options) { o.ChunkSize = 1 }, true},
		{"chunk max", func(o *Options) { o.ChunkSize = maxChunkSize }, true},
		{"no timeout", func(o *Options) { o.Timeout = 0 }, false},
		{"negative timeout", func(o *Options) { o.Timeout = -time.Second }, false},
		{"negative chunk", func(o *Options) { o.ChunkSize = -1 }, false},
		{"huge chunk", func(o *Options) { o.ChunkSize = maxChunkSize + 1 }, false},
		{"no network", func(o *Options) { o.Network = "" }, false},
		{"udp", func(o *Options) { o.Network = "udp" }, false},
		{"relative socket", func(o *Options) { o.Address = "clamd.sock" }, false},
		{"empty address", func(o *Options) { o.Address = "" }, false},
		{"tcp without port", func(o *Options) { o.Network, o.Address = "tcp", "127.0.0.1" }, false},
	}
	for _, tt := range tests {
		o := ok
		tt.edit(&o)
		c, err := New(o)
		if (err == nil) != tt.valid {
			t.Errorf("%s: New(%+v) error = %v, want valid=%v", tt.name, o, err, tt.valid)
		}
		if err == nil && c == nil {
			t.Errorf("%s: nil Client", tt.name)
		}
	}
}

func TestString(t *testing.T) {
	for _, s := range []string{"unix:/run/clamd.sock", "tcp://127.0.0.1:3310", "tcp://[::1]:3310"} {
		network, addr, err := ParseAddress(s)
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Options{Network: network, Address: addr, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if c.String() != s {
			t.Errorf("String() = %q, want %q", c.String(), s)
		}
	}
}
