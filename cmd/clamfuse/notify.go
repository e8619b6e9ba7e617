package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
)

// sdNotify sends state ("READY=1", "STOPPING=1", ...) to the service
// manager, as sd_notify(3) does: one datagram to the unix socket named by
// $NOTIFY_SOCKET, a path or, with a leading "@", an abstract name. Without
// NOTIFY_SOCKET (not started by systemd as Type=notify) it does nothing.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or an @abstract name", name)
	}
	// The net package maps a leading "@" to the abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %v", err)
	}
	return nil
}

// notifyReady tells whoever started clamfuse that the mount is live:
// systemd (Type=notify), and the waiting parent of the fstab form.
func notifyReady(log *slog.Logger, h mountHooks, src, dst string) {
	if err := sdNotify("READY=1\nSTATUS=serving " + src + " on " + dst); err != nil {
		log.Warn("cannot tell systemd the mount is ready", "err", err)
	}
	if h.ready != nil {
		h.ready()
	}
}

// notifyStopping tells systemd that clamfuse is shutting down.
func notifyStopping(log *slog.Logger) {
	if err := sdNotify("STOPPING=1"); err != nil {
		log.Debug("cannot tell systemd clamfuse is stopping", "err", err)
	}
}
