package fuse

// clamfuse: whether requests are queued, for the request loop's choice
// of serving in parallel (fusefs, clamfuse_readloop.go).

import "golang.org/x/sys/unix"

// Pending reports whether the kernel holds a request that no reader has
// taken yet: poll(2) of the connection's descriptor, without waiting.
func (c *Conn) Pending() bool {
	c.rio.RLock()
	defer c.rio.RUnlock()
	fds := []unix.PollFd{{Fd: int32(c.fd()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
}
