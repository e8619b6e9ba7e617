package clamav

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// maxUnixPath is the longest socket path Linux accepts (sun_path is 108
// bytes including the terminating NUL).
const maxUnixPath = 107

// ParseAddress parses a clamd address as written in configuration:
//
//	/run/clamav/clamd.ctl        unix socket
//	unix:/run/clamav/clamd.ctl   unix socket
//	tcp://127.0.0.1:3310         TCP
//
// and returns the network ("unix" or "tcp") and address for Options.
// Anything else, including relative socket paths, is an error naming s.
func ParseAddress(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "/"):
		network, addr = "unix", s
	case strings.HasPrefix(s, "unix://"):
		return "", "", fmt.Errorf("clamd address %q: write a unix socket as unix:/path or /path", s)
	case strings.HasPrefix(s, "unix:"):
		network, addr = "unix", strings.TrimPrefix(s, "unix:")
	case strings.HasPrefix(s, "tcp://"):
		network, addr = "tcp", strings.TrimPrefix(s, "tcp://")
	default:
		return "", "", fmt.Errorf("clamd address %q: want /path, unix:/path or tcp://host:port", s)
	}
	if err := checkAddress(network, addr); err != nil {
		return "", "", fmt.Errorf("clamd address %q: %w", s, err)
	}
	return network, addr, nil
}

// checkAddress validates a network and address pair.
func checkAddress(network, addr string) error {
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c <= ' ' || c == 0x7f {
			return errors.New("address contains a space or control character")
		}
	}
	switch network {
	case "unix":
		if !strings.HasPrefix(addr, "/") {
			return errors.New("unix socket path must be absolute")
		}
		if len(addr) > maxUnixPath {
			return fmt.Errorf("unix socket path is %d bytes, longer than the %d the kernel accepts", len(addr), maxUnixPath)
		}
	case "tcp":
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return fmt.Errorf("want host:port: %w", err)
		}
		if host == "" {
			return errors.New("missing host")
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return fmt.Errorf("invalid port %q", port)
		}
	default:
		return fmt.Errorf("network %q: want unix or tcp", network)
	}
	return nil
}

// formatAddress is the inverse of ParseAddress, for logs.
func formatAddress(network, addr string) string {
	if network == "tcp" {
		return "tcp://" + addr
	}
	return "unix:" + addr
}
