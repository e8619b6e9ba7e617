package metrics

import (
	"net"
	"sync"
)

// maxConns bounds the connections the metrics endpoint serves at once.
// Any local user can connect to it, and each connection is a descriptor
// of clamfuse's, taken from the reserve that its own work needs; a
// scraper needs one. Past the bound Accept waits, and the kernel's
// listen backlog holds the connections meanwhile.
const maxConns = 32

// limitListener accepts at most n connections at once.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func limitConns(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// limitConn gives its slot back when closed, once.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
