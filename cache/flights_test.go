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
	first := fs.start(k, func() (any, error) { <-release; return 7, nil })
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
