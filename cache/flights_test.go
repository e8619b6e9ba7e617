package cache

import (
	"errors"
	"testing"
	"time"
)

// TestFlights: a second caller of a key in flight joins it (told so, and
// given its result); a run that panics ends its flight with errAbnormal
// for those who joined, and the key is free again after either.
func TestFlights(t *testing.T) {
	var fs flights
	k, p := Key{Ino: 1, DB: "db"}, Key{Ino: 2, DB: "db"}
	release := make(chan struct{})
	first, ours := fs.join(k)
	if !ours {
		t.Fatal("the first caller of a key did not get to run it")
	}
	go fs.run(k, first, func() (any, error) { <-release; return 7, nil })
	joined := make(chan struct{})
	got := make(chan any, 1)
	go func() {
		v, err, shared := fs.do(k, func() (any, error) { return 0, errors.New("ran twice") }, func() { close(joined) })
		if err != nil || !shared {
			t.Errorf("joined: %v, shared %v", err, shared)
		}
		got <- v
	}()
	select {
	case <-joined:
	case <-time.After(5 * time.Second):
		t.Fatal("the second caller was not told it joined")
	}
	close(release)
	<-first.done
	select {
	case v := <-got:
		if v != 7 {
			t.Errorf("joined got %v; want 7, the run's", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the joined caller never got the result")
	}
	if v, err, shared := fs.do(k, func() (any, error) { return 8, nil }, nil); v != 8 || err != nil || shared {
		t.Errorf("after the flight: %v, %v, shared %v; want a run of its own", v, err, shared)
	}

	inside := make(chan struct{})
	letPanic := make(chan struct{})
	go func() {
		defer func() { recover() }()
		fs.do(p, func() (any, error) { close(inside); <-letPanic; panic("boom") }, nil)
	}()
	<-inside
	f, ours := fs.join(p)
	if ours {
		t.Fatal("joined a key in flight as its runner")
	}
	close(letPanic)
	<-f.done
	if !errors.Is(f.err, errAbnormal) {
		t.Errorf("a panicked run's result: %v; want errAbnormal", f.err)
	}
	if _, ours := fs.join(p); !ours {
		t.Error("the key of a panicked run is still taken")
	}
}

// TestFlightsPassedOn: a run that passes its flight on (lead, pass) does
// not end it: those who joined wait for whoever it was passed to, and get
// that one's result; a panic before passing it on ends it.
func TestFlightsPassedOn(t *testing.T) {
	var fs flights
	k := Key{Ino: 3, DB: "db"}
	f, _ := fs.join(k)
	release := make(chan struct{})
	fs.lead(k, f, func() (any, error, bool) {
		go fs.run(k, f, func() (any, error) { <-release; return 9, nil })
		return 0, errors.New("the leader's own result"), true
	})
	if g, ours := fs.join(k); ours || g != f {
		t.Fatal("a flight passed on is not joined any more")
	}
	select {
	case <-f.done:
		t.Fatal("the flight ended when its leader passed it on")
	default:
	}
	close(release)
	<-f.done
	if f.val != 9 || f.err != nil {
		t.Errorf("flight passed on: %v, %v; want 9, nil (the result of the one it was passed to)", f.val, f.err)
	}

	p := Key{Ino: 4, DB: "db"}
	g, _ := fs.join(p)
	func() {
		defer func() { recover() }()
		fs.lead(p, g, func() (any, error, bool) { panic("boom") })
	}()
	<-g.done
	if !errors.Is(g.err, errAbnormal) {
		t.Errorf("a leader that panicked: %v; want errAbnormal", g.err)
	}
}
