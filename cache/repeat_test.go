package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// logLines decodes JSON log lines.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("log is not JSON lines: %v", err)
		}
		out = append(out, m)
	}
	return out
}

// A denial of one file state is logged once per interval; the end of the
// interval logs how many were left out; the next one is logged at once.
// Errors of one kind are one line whatever the file; interval 0 logs all.
func TestGateRepeats(t *testing.T) {
	clock := newFakeClock()
	var buf bytes.Buffer
	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := NewGate(s, Options{MaxEntries: 64, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	g.repeats.now = clock.now
	g.SetPolicy(Policy{LogRepeat: time.Minute})
	bad := writeFile(t, "EICAR")
	for range 5 {
		g.Check(t.Context(), openFile(t, bad), someone)
	}
	other := writeFile(t, "EICAR too")
	g.Check(t.Context(), openFile(t, other), someone)
	lines := logLines(t, &buf)
	if len(lines) != 2 || lines[0]["path"] != someone.Path || lines[0]["suppressed"] != nil {
		t.Fatalf("logged %v; want one line per file state, without a count", lines)
	}
	if st := g.Stats(); st.Suppressed != 4 || st.Denied != 6 {
		t.Errorf("Stats %+v; want 4 suppressed, 6 denied", st)
	}

	clock.advance(time.Minute)
	buf.Reset()
	if next := g.repeats.end(clock.now()); next != time.Duration(1<<63-1) {
		t.Errorf("end: next %v; want none left", next)
	}
	lines = logLines(t, &buf)
	if len(lines) != 1 || lines[0]["msg"] != "infected file denied (repeated)" || lines[0]["suppressed"] != float64(4) ||
		lines[0]["path"] != someone.Path || lines[0]["interval"] != float64(time.Minute) {
		t.Fatalf("at the end of the interval logged %v; want the count of the 4 left out", lines)
	}
	buf.Reset()
	g.Check(t.Context(), openFile(t, bad), someone)
	if lines := logLines(t, &buf); len(lines) != 1 || lines[0]["suppressed"] != nil {
		t.Errorf("after the interval logged %v; want the line at once", lines)
	}

	// Repeats whose interval is over before the timer ends it: the next
	// line carries their count.
	buf.Reset()
	g.Check(t.Context(), openFile(t, bad), someone)
	clock.advance(2 * time.Minute)
	g.Check(t.Context(), openFile(t, bad), someone)
	if lines := logLines(t, &buf); len(lines) != 1 || lines[0]["suppressed"] != float64(1) {
		t.Errorf("logged %v; want one line with suppressed=1", lines)
	}

	// Errors: one line per kind, whatever the file.
	buf.Reset()
	down := NewGate(&fakeScanner{judge: failWith(fmt.Errorf("x: %w", clamav.ErrUnavailable))},
		Options{MaxEntries: 64, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	down.repeats.now = clock.now
	down.SetPolicy(Policy{LogRepeat: time.Minute})
	for i := range 10 {
		down.Check(t.Context(), openFile(t, writeFile(t, fmt.Sprint(i))), someone)
	}
	if lines := logLines(t, &buf); len(lines) != 1 || lines[0]["msg"] != "file denied without a verdict" {
		t.Errorf("clamd down, 10 files: logged %v; want one line", lines)
	}

	// Interval 0: every line.
	buf.Reset()
	down.SetPolicy(Policy{})
	for range 3 {
		down.Check(t.Context(), openFile(t, bad), someone)
	}
	if lines := logLines(t, &buf); len(lines) != 3 {
		t.Errorf("repeat interval 0: logged %d lines; want 3", len(lines))
	}
}

// Past maxRepeatKeys keys at once, new keys share one per message.
func TestRepeatsBounded(t *testing.T) {
	clock := newFakeClock()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	r := repeats{now: clock.now}
	for i := range maxRepeatKeys + 100 {
		r.log(log, time.Hour, slog.LevelWarn, repeatKey{msg: "m", file: fileKey{ino: uint64(i)}}, "m", nil)
	}
	if n := len(logLines(t, &buf)); n != maxRepeatKeys+1 {
		t.Errorf("%d lines for %d keys; want %d", n, maxRepeatKeys+100, maxRepeatKeys+1)
	}
	if n := len(r.m); n > maxRepeatKeys+1 {
		t.Errorf("%d keys tracked; want at most %d", n, maxRepeatKeys+1)
	}
	clock.advance(time.Hour)
	r.end(clock.now())
	if len(r.m) != 0 {
		t.Errorf("%d keys left after their intervals ended", len(r.m))
	}
}

// The timer ends intervals without another line coming.
func TestRepeatsTimer(t *testing.T) {
	var buf testenv.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	var r repeats
	k := repeatKey{msg: "m"}
	for range 3 {
		r.log(log, 10*time.Millisecond, slog.LevelWarn, k, "m", []any{slog.String("path", "p")})
	}
	waitFor(t, "the count of the repeats", func() bool { return strings.Contains(buf.String(), `"suppressed":2`) })
	waitFor(t, "the timer to stop", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.timer == nil
	})
}
