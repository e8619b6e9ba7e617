package cache

import (
	"errors"
	"sync"
)

// flights share one run of a scan among the callers that ask for the same
// key at once, as golang.org/x/sync/singleflight does, and also tell a
// caller that it joined a run already going: a background scan holds a
// scan slot when it asks (settle), and must give it back before it waits
// for someone else's scan, which may be waiting for that very slot.
type flights struct {
	mu sync.Mutex      // guards m; a leaf
	m  map[Key]*flight // runs going, by the state they judge
}

// flight is one run; val and err are set before done is closed.
type flight struct {
	done chan struct{}
	val  any
	err  error
}

// errAbnormal is the result of a run whose function panicked.
var errAbnormal = errors.New("cache: the scan ended abnormally")

// join returns the run going for key, or a new one the caller must run
// (ours).
func (fs *flights) join(key Key) (f *flight, ours bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.m[key]; f != nil {
		return f, false
	}
	if fs.m == nil {
		fs.m = map[Key]*flight{}
	}
	f = &flight{done: make(chan struct{})}
	fs.m[key] = f
	return f, true
}

// run runs fn as the flight f of key and ends it, even if fn panics.
func (fs *flights) run(key Key, f *flight, fn func() (any, error)) {
	fs.lead(key, f, func() (any, error, bool) {
		v, err := fn()
		return v, err, false
	})
}

// lead runs fn as the flight f of key, in this goroutine, and ends it
// with fn's result, even if fn panics; unless fn passes the flight on
// (pass): it then goes on, and whoever fn handed it to ends it (run).
// An open that starts a scan runs it itself this way, with no goroutine
// between it and the scan's, and passes it on only when it leaves before
// the scan is over (Gate.lead).
func (fs *flights) lead(key Key, f *flight, fn func() (v any, err error, pass bool)) {
	normal := false
	defer func() {
		if !normal {
			fs.end(key, f, nil, errAbnormal)
		}
	}()
	v, err, pass := fn()
	normal = true
	if !pass {
		fs.end(key, f, v, err)
	}
}

// end ends the flight f of key with v and err: those who joined it get
// them, and key is free for a new flight.
func (fs *flights) end(key Key, f *flight, v any, err error) {
	f.val, f.err = v, err
	fs.mu.Lock()
	if fs.m[key] == f {
		delete(fs.m, key)
	}
	fs.mu.Unlock()
	close(f.done)
}

// do runs fn for key in this goroutine, or, when a run for key is going
// already, calls joined (if not nil) and then waits for that run; it
// returns the result of the run, and whether it was someone else's.
func (fs *flights) do(key Key, fn func() (any, error), joined func()) (v any, err error, shared bool) {
	f, ours := fs.join(key)
	if ours {
		fs.run(key, f, fn)
	} else {
		if joined != nil {
			joined()
		}
		<-f.done
	}
	return f.val, f.err, !ours
}
