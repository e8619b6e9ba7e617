package fusefs

import (
	"testing"
	"time"
)

// TestReleasesServed: the channel of Server.ReleasesServed is nil while no
// RELEASE is in flight, and is closed when the last one in flight is
// served, not before; every waiter gets the same channel.
func TestReleasesServed(t *testing.T) {
	s := &Server{loop: &readLoop{}}
	if ch := s.ReleasesServed(); ch != nil {
		t.Fatal("a channel with no RELEASE in flight")
	}
	l := s.loop
	l.releasing.Add(2)
	a, b := s.ReleasesServed(), s.ReleasesServed()
	if a == nil || a != b {
		t.Fatalf("waiters got %v and %v, want one channel", a, b)
	}
	l.released()
	select {
	case <-a:
		t.Fatal("closed with one RELEASE still in flight")
	default:
	}
	l.released()
	select {
	case <-a:
	case <-time.After(10 * time.Second):
		t.Fatal("not closed once the last RELEASE was served")
	}
	if s.ReleasesServed() != nil {
		t.Fatal("a channel once all were served")
	}
	// A new RELEASE in flight makes a new channel.
	l.releasing.Add(1)
	c := s.ReleasesServed()
	if c == nil || c == a {
		t.Fatal("no new channel for a new RELEASE in flight")
	}
	l.released()
	<-c
}
