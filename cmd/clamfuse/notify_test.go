package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenNotify listens on a unixgram socket like systemd's notify socket
// and returns its name for NOTIFY_SOCKET and a function that reads one
// datagram.
func listenNotify(t *testing.T, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading the notify socket: %v", err)
		}
		return string(buf[:n])
	}
}

func TestSdNotify(t *testing.T) {
	t.Run("path", func(t *testing.T) {
		name := filepath.Join(t.TempDir(), "notify")
		recv := listenNotify(t, name)
		t.Setenv("NOTIFY_SOCKET", name)
		if err := sdNotify("READY=1\nSTATUS=x"); err != nil {
			t.Fatal(err)
		}
		if got := recv(); got != "READY=1\nSTATUS=x" {
			t.Errorf("got %q", got)
		}
	})
	t.Run("abstract", func(t *testing.T) {
		name := fmt.Sprintf("@clamfuse-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		recv := listenNotify(t, name)
		t.Setenv("NOTIFY_SOCKET", name)
		if err := sdNotify("STOPPING=1"); err != nil {
			t.Fatal(err)
		}
		if got := recv(); got != "STOPPING=1" {
			t.Errorf("got %q", got)
		}
	})
	t.Run("unset", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		if err := sdNotify("READY=1"); err != nil {
			t.Errorf("without NOTIFY_SOCKET: %v; want nil", err)
		}
	})
	t.Run("bad name", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
		if err := sdNotify("READY=1"); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
			t.Errorf("err = %v; want one naming NOTIFY_SOCKET", err)
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "none"))
		if err := sdNotify("READY=1"); err == nil {
			t.Error("err = nil; want an error")
		}
	})
}
