package cache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Lines that repeat.
//
// Any user can make the gate log: by opening an infected file in a loop,
// or any file while clamd is down. So a line is logged at once the first
// time, and then at most once per interval (Policy.LogRepeat, the key
// log.repeat_interval) for one file state and reason (a denial, an
// allowance), or for one kind of error (lines about opens without a
// verdict, whatever the file): the repeats within the interval are only
// counted, and when the interval ends a line with the message and
// attributes of the first one, the message followed by " (repeated)",
// says how many there were (suppressed=N, interval). The next repeat
// after that is logged at once again; when it comes before the timer
// ended the interval, it carries the count itself (suppressed=N: so many
// lines before it were left out). Stats.Suppressed counts the lines left
// out.
//
// The memory is bounded: past maxRepeatKeys keys tracked at once, new
// ones share one key per message.
//
// Lock order: repeats.mu is a leaf.

// maxRepeatKeys bounds the keys tracked at once.
const maxRepeatKeys = 4096

// repeatKey says which lines are repeats of each other.
type repeatKey struct {
	msg  string
	kind string  // the reason, and for lines without a file state the kind of error
	file fileKey // the file state, for lines about one
}

// repeated is a line logged within its interval.
type repeated struct {
	until time.Time // the end of its interval
	n     int       // repeats left out since
	level slog.Level
	every time.Duration
	log   *slog.Logger
	attrs []any // the line's, for the count at the end
}

// repeats are the lines logged within their interval.
type repeats struct {
	mu         sync.Mutex // guards m and timer
	m          map[repeatKey]*repeated
	timer      *time.Timer // ends the intervals that are over; nil when none is armed
	suppressed atomic.Uint64
	now        func() time.Time // time.Now but in tests
}

func (r *repeats) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// log logs msg with attrs at level unless a line with key k was logged
// less than every ago; then it only counts it.
func (r *repeats) log(l *slog.Logger, every time.Duration, level slog.Level, k repeatKey, msg string, attrs []any) {
	if every <= 0 {
		l.Log(context.Background(), level, msg, attrs...)
		return
	}
	now := r.clock()
	r.mu.Lock()
	if r.m == nil {
		r.m = map[repeatKey]*repeated{}
	}
	e := r.m[k]
	if e == nil && len(r.m) >= maxRepeatKeys {
		k = repeatKey{msg: msg, kind: "(many)"}
		e = r.m[k]
	}
	if e != nil && now.Before(e.until) {
		e.n++
		r.mu.Unlock()
		r.suppressed.Add(1)
		return
	}
	// A line whose interval is over but not yet ended by the timer
	// carries its count.
	if e != nil && e.n > 0 {
		attrs = append(attrs[:len(attrs):len(attrs)], slog.Int("suppressed", e.n))
	}
	r.m[k] = &repeated{until: now.Add(every), level: level, every: every, log: l, attrs: attrs}
	if r.timer == nil {
		r.timer = time.AfterFunc(every, r.tick)
	}
	r.mu.Unlock()
	l.Log(context.Background(), level, msg, attrs...)
}

// tick ends the intervals that are over, and is armed again for the
// next one to end.
func (r *repeats) tick() {
	next := r.end(r.clock())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	if len(r.m) > 0 {
		r.timer = time.AfterFunc(max(next, time.Millisecond), r.tick)
	}
}

// end ends the intervals over at now: it logs the count of each line
// that had repeats, and forgets the line. It returns how long until the
// next interval ends.
func (r *repeats) end(now time.Time) time.Duration {
	type count struct {
		k repeatKey
		e *repeated
	}
	var counts []count
	next := time.Duration(1<<63 - 1)
	r.mu.Lock()
	for k, e := range r.m {
		if now.Before(e.until) {
			next = min(next, e.until.Sub(now))
			continue
		}
		delete(r.m, k)
		if e.n > 0 {
			counts = append(counts, count{k, e})
		}
	}
	r.mu.Unlock()
	for _, c := range counts {
		c.e.log.Log(context.Background(), c.e.level, c.k.msg+" (repeated)",
			append(c.e.attrs[:len(c.e.attrs):len(c.e.attrs)], slog.Int("suppressed", c.e.n), slog.Duration("interval", c.e.every))...)
	}
	return next
}
