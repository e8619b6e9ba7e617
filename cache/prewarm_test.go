package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// lockedBuffer is a JSON log sink safe for the gate's goroutines.
type lockedBuffer struct{ testenv.SyncBuffer }

// lines decodes the JSON log lines written so far.
func (b *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(b.String()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("log is not JSON lines: %v", err)
		}
		out = append(out, m)
	}
	return out
}

// waiting is how many scans opens and scans after a write wait for.
func waiting(g *Gate) int {
	g.demand.mu.Lock()
	defer g.demand.mu.Unlock()
	return g.demand.n
}

// prewarmAsync runs g.Prewarm in a goroutine; the result arrives on the
// channel.
type prewarmed struct {
	r   PrewarmResult
	err error
}

func prewarmAsync(ctx context.Context, g *Gate, f *os.File, rel string) <-chan prewarmed {
	ch := make(chan prewarmed, 1)
	go func() {
		r, err := g.Prewarm(ctx, f, rel)
		ch <- prewarmed{r, err}
	}()
	return ch
}

func recvPrewarm(t *testing.T, ch <-chan prewarmed) prewarmed {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("Prewarm did not return within 5s")
		return prewarmed{}
	}
}

// Prewarm judges a file the way an open would, caches the verdict, and
// says what it did; the next open decides from the cache.
func TestPrewarmResults(t *testing.T) {
	tests := []struct {
		name    string
		content string
		judge   func([]byte) (clamav.Result, error)
		maxSize int64
		opened  bool // opened (and so judged) before the prewarm
		want    PrewarmResult
		err     error // nil: none; else errors.Is
		scans   int   // by the prewarm
		open    expect
		warn    bool // "infected file found by prewarm" logged
	}{
		{name: "clean", content: "clean", want: PrewarmClean, scans: 1,
			open: expect{allow: true, reason: ReasonClean, cached: true}},
		{name: "infected", content: "EICAR", judge: infectedIf("EICAR"), want: PrewarmInfected, scans: 1,
			open: expect{reason: ReasonInfected, sig: eicarSig, cached: true}, warn: true},
		{name: "judged already", content: "EICAR", judge: infectedIf("EICAR"), opened: true, want: PrewarmCached,
			open: expect{reason: ReasonInfected, sig: eicarSig, cached: true}},
		{name: "empty", content: "", want: PrewarmSkipped,
			open: expect{allow: true, reason: ReasonEmpty}},
		{name: "over max_size", content: "far over ten bytes", maxSize: 10, want: PrewarmSkipped,
			open: expect{reason: ReasonOversize, err: errAny}},
		{name: "over clamd's stream limit", content: "big", judge: failWith(clamav.ErrSizeLimit),
			want: PrewarmSkipped, err: clamav.ErrSizeLimit, scans: 1,
			open: expect{reason: ReasonOversize, err: clamav.ErrSizeLimit}},
		// (No clamd at all is waited for: TestPrewarmWaitsForClamd.)
		{name: "no verdict", content: "x", judge: failWith(clamav.ErrProtocol),
			want: PrewarmError, err: clamav.ErrProtocol, scans: 1,
			open: expect{reason: ReasonError, err: clamav.ErrProtocol}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var log lockedBuffer
			s := &fakeScanner{judge: tt.judge}
			g := NewGate(s, Options{MaxEntries: 16, MaxSize: tt.maxSize,
				Logger: slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			p := writeFile(t, tt.content)
			if tt.opened {
				g.Check(t.Context(), openFile(t, p), someone)
			}
			before, stats := s.Calls(), g.Stats()

			r, err := g.Prewarm(t.Context(), openFile(t, p), "dir/x.exe")
			if r != tt.want {
				t.Errorf("Prewarm = %v, %v; want %v", r, err, tt.want)
			}
			if (tt.err == nil) != (err == nil) || (tt.err != nil && !errors.Is(err, tt.err)) {
				t.Errorf("Prewarm error = %v; want %v", err, tt.err)
			}
			if got := s.Calls() - before; got != tt.scans {
				t.Errorf("prewarm scans = %d; want %d", got, tt.scans)
			}
			if st := g.Stats(); st.Hits != stats.Hits || st.Misses != stats.Misses || st.Denied != stats.Denied {
				t.Errorf("Stats = %+v after the prewarm, %+v before; a prewarm counts no opens", st, stats)
			}
			calls := s.Calls()
			checkDecision(t, "open after prewarm", g.Check(t.Context(), openFile(t, p), someone), tt.open)
			if tt.open.cached && s.Calls() != calls {
				t.Errorf("the open after prewarm scanned again")
			}

			var warns []map[string]any
			for _, l := range log.lines(t) {
				if l["msg"] == "infected file found by prewarm" {
					warns = append(warns, l)
				}
			}
			if !tt.warn {
				if len(warns) != 0 {
					t.Errorf("logged %v; want no prewarm detection", warns)
				}
				return
			}
			if len(warns) != 1 {
				t.Fatalf("prewarm detections logged: %v; want 1", warns)
			}
			for k, v := range map[string]any{"level": "WARN", "path": "dir/x.exe", "signature": eicarSig, "clamd": "fake:clamd"} {
				if warns[0][k] != v {
					t.Errorf("%s = %#v; want %#v (line %v)", k, warns[0][k], v, warns[0])
				}
			}
		})
	}
}

// A prewarm scan does not start while an open, or a scan after a write,
// waits for a scan or runs one; it starts once they are over.
func TestPrewarmYields(t *testing.T) {
	tests := []struct {
		name       string
		foreground func(t *testing.T, g *Gate, f *os.File) (done func())
	}{
		{"open", func(t *testing.T, g *Gate, f *os.File) func() {
			ch := checkAsync(t.Context(), g, f, someone)
			return func() { checkDecision(t, "open", recv(t, ch), expect{allow: true, reason: ReasonClean}) }
		}},
		{"scan after write", func(t *testing.T, g *Gate, f *os.File) func() {
			g.Prescan(f, someone, nil)
			return func() { waitFor(t, "the scan after write to end", func() bool { return g.prescans.Load() == 0 }) }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &fakeScanner{}
			release := s.hold(t)
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4})
			var yielded atomic.Int32
			g.hooks.idleWait = func() { yielded.Add(1) }
			done := tt.foreground(t, g, openFile(t, writeFile(t, "foreground")))
			waitFor(t, "the foreground scan to start", func() bool { return s.Calls() == 1 })

			pw := prewarmAsync(t.Context(), g, openFile(t, writeFile(t, "background")), "bg")
			waitFor(t, "the prewarm to wait for the foreground scan", func() bool { return yielded.Load() == 1 })
			if got := s.Calls(); got != 1 {
				t.Fatalf("%d scans while the foreground scan ran; want the prewarm to wait", got)
			}
			release()
			done()
			if got := recvPrewarm(t, pw); got.r != PrewarmClean || got.err != nil {
				t.Errorf("Prewarm = %v, %v; want clean", got.r, got.err)
			}
			if got := string(s.Seen(2)); got != "background" {
				t.Errorf("second scan read %q; want the prewarm's", got)
			}
		})
	}
}

// gates holds each scan of s, by call number (from 1), until its gate is
// opened; scans past the last gate run freely.
func gates(t *testing.T, s *fakeScanner, n int) (open func(call int)) {
	chans := make([]chan struct{}, n+1)
	opens := make([]func(), n+1)
	for i := range chans {
		chans[i] = make(chan struct{})
		opens[i] = sync.OnceFunc(func() { close(chans[i]) })
		t.Cleanup(opens[i])
	}
	s.mutate = func(call int) {
		if call <= n {
			<-chans[call]
		}
	}
	return func(call int) { opens[call]() }
}

// The scenario the design is for, with one scan slot: a prewarm scan
// runs and an open comes; the walk moves on to the next file while that
// open scans, and a second open comes. Both opens scan before the next
// prewarm scan: an open waits behind the one prewarm scan already running
// when it came, no more.
func TestPrewarmOpenNotStarved(t *testing.T) {
	s := &fakeScanner{}
	open := gates(t, s, 4)
	g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 1})
	var yielded atomic.Int32
	g.hooks.idleWait = func() { yielded.Add(1) }
	p1 := prewarmAsync(t.Context(), g, openFile(t, writeFile(t, "prewarm 1")), "p1")
	waitFor(t, "the first prewarm scan to start", func() bool { return s.Calls() == 1 })

	o1 := checkAsync(t.Context(), g, openFile(t, writeFile(t, "open 1")), someone)
	waitFor(t, "the first open to wait", func() bool { return waiting(g) == 1 })
	open(1)
	if got := recvPrewarm(t, p1); got.r != PrewarmClean {
		t.Fatalf("first Prewarm = %v, %v; want clean", got.r, got.err)
	}
	waitFor(t, "the first open to scan", func() bool { return s.Calls() == 2 })
	// The walk goes on at once.
	p2 := prewarmAsync(t.Context(), g, openFile(t, writeFile(t, "prewarm 2")), "p2")
	waitFor(t, "the second prewarm to wait for the first open's scan", func() bool { return yielded.Load() == 1 })
	o2 := checkAsync(t.Context(), g, openFile(t, writeFile(t, "open 2")), someone)
	waitFor(t, "the second open to wait", func() bool { return waiting(g) == 2 })
	for call := 2; call <= 4; call++ {
		open(call)
	}
	checkDecision(t, "first open", recv(t, o1), expect{allow: true, reason: ReasonClean})
	checkDecision(t, "second open", recv(t, o2), expect{allow: true, reason: ReasonClean})
	if got := recvPrewarm(t, p2); got.r != PrewarmClean {
		t.Fatalf("second Prewarm = %v, %v; want clean", got.r, got.err)
	}
	for i, want := range []string{"prewarm 1", "open 1", "open 2", "prewarm 2"} {
		if got := string(s.Seen(i + 1)); got != want {
			t.Errorf("scan %d read %q; want %q", i+1, got, want)
		}
	}
	if got := s.MaxInflight(); got != 1 {
		t.Errorf("%d scans at once; want 1 (max_concurrent)", got)
	}
}

// A Prewarm returns as soon as its context is done: waiting for the opens
// (nothing scanned), or scanning (the scan goes on and is cached).
func TestPrewarmCancelled(t *testing.T) {
	t.Run("waiting", func(t *testing.T) {
		s := &fakeScanner{}
		release := s.hold(t)
		g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4})
		open := checkAsync(t.Context(), g, openFile(t, writeFile(t, "foreground")), someone)
		waitFor(t, "the open's scan to start", func() bool { return s.Calls() == 1 })

		ctx, cancel := context.WithCancel(t.Context())
		pw := prewarmAsync(ctx, g, openFile(t, writeFile(t, "background")), "bg")
		cancel()
		if got := recvPrewarm(t, pw); got.r != PrewarmError || !errors.Is(got.err, context.Canceled) {
			t.Errorf("Prewarm = %v, %v; want error, context.Canceled", got.r, got.err)
		}
		release()
		recv(t, open)
		if got := s.Calls(); got != 1 {
			t.Errorf("scans = %d; want 1 (the cancelled prewarm scans nothing)", got)
		}
	})
	t.Run("scanning", func(t *testing.T) {
		s := &fakeScanner{judge: infectedIf("EICAR")}
		release := s.hold(t)
		g := NewGate(s, Options{MaxEntries: 16})
		p := writeFile(t, "EICAR")
		ctx, cancel := context.WithCancel(t.Context())
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		pw := prewarmAsync(ctx, g, f, "x")
		waitFor(t, "the prewarm scan to start", func() bool { return s.Calls() == 1 })
		cancel()
		if got := recvPrewarm(t, pw); got.r != PrewarmError || !errors.Is(got.err, context.Canceled) {
			t.Errorf("Prewarm = %v, %v; want error, context.Canceled", got.r, got.err)
		}
		f.Close() // as the walk does: the scan has its own descriptor
		release()
		waitFor(t, "the verdict to be cached", func() bool { return g.Cache().Len() == 1 })
		checkDecision(t, "open", g.Check(t.Context(), openFile(t, p), someone),
			expect{reason: ReasonInfected, sig: eicarSig, cached: true})
		if got := s.Calls(); got != 1 {
			t.Errorf("scans = %d; want 1", got)
		}
	})
}

// No prewarm scan starts during a reload window, when its verdict could
// not be cached; it starts once the window is over. The prewarm must
// reach the window while it is still open: when a slow machine let the
// window pass first, the test tries again with a longer one.
func TestPrewarmReloadWindow(t *testing.T) {
	for _, window := range []time.Duration{300 * time.Millisecond, 3 * time.Second, 20 * time.Second} {
		s := &fakeScanner{}
		g := NewGate(s, Options{MaxEntries: 16})
		yielded := make(chan struct{})
		g.hooks.idleWait = sync.OnceFunc(func() { close(yielded) })
		g.Invalidate(window)
		pw := prewarmAsync(t.Context(), g, openFile(t, writeFile(t, "hello")), "x")
		var got prewarmed
		select {
		case <-yielded:
			// The prewarm waits for the window: nothing may be scanned
			// until it closes.
			if n := s.Calls(); n != 0 {
				t.Errorf("%d scans while the prewarm waits for the reload window; want none", n)
			}
			select {
			case got = <-pw:
			case <-time.After(window + 10*time.Second):
				t.Fatalf("Prewarm did not return within %v of a %v window", window+10*time.Second, window)
			}
		case got = <-pw:
			t.Logf("the %v reload window closed before the prewarm reached it; again with a longer one", window)
			continue
		}
		if got.r != PrewarmClean || got.err != nil {
			t.Errorf("Prewarm = %v, %v; want clean", got.r, got.err)
		}
		if !g.Caching() {
			t.Errorf("Prewarm scanned before the reload window closed")
		}
		// One scan, or two: when the window closes, its generation moves
		// (a timer, just after caching resumes), and a scan that started
		// in between judged a key that has passed, so it scans again.
		if n := s.Calls(); n < 1 || n > 2 {
			t.Errorf("%d scans after the window; want 1 (or 2, see above)", n)
		}
		return
	}
	t.Fatal("the prewarm never reached an open reload window")
}

// A file written through the mount is still judged at once after it is
// closed (Prescan shares its body with Prewarm), and a detection logged.
func TestPrescanInfected(t *testing.T) {
	var log lockedBuffer
	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := NewGate(s, Options{MaxEntries: 16,
		Logger: slog.New(slog.NewJSONHandler(&log, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	p := writeFile(t, "EICAR")
	g.Prescan(openFile(t, p), someone, nil)
	waitFor(t, "the scan after write", func() bool { return g.prescans.Load() == 0 })
	lines := log.lines(t)
	if len(lines) != 1 || lines[0]["msg"] != "infected file written" || lines[0]["path"] != someone.Path ||
		lines[0]["signature"] != eicarSig || lines[0]["pid"] != float64(someone.Pid) {
		t.Errorf("logged %v; want one detection of %s", lines, someone.Path)
	}
	checkDecision(t, "open", g.Check(t.Context(), openFile(t, p), someone),
		expect{reason: ReasonInfected, sig: eicarSig, cached: true})
	if waiting(g) != 0 {
		t.Errorf("Waiting = %d after every scan ended; want 0", waiting(g))
	}
}

func TestPrewarmResultString(t *testing.T) {
	var got []string
	for _, r := range PrewarmResults {
		got = append(got, r.String())
	}
	if want := "[clean infected cached skipped error]"; fmt.Sprint(got) != want {
		t.Errorf("labels = %v; want %s", got, want)
	}
}

// TestPrewarmWaitsForClamd: while no clamd can be reached, Prewarm tries
// the same file again instead of counting it as an error, until clamd
// answers or the walk is stopped.
func TestPrewarmWaitsForClamd(t *testing.T) {
	defer func(d time.Duration) { prewarmRetry = d }(prewarmRetry)
	prewarmRetry = time.Millisecond
	unreachable := fmt.Errorf("%w: connect: no such file or directory", clamav.ErrUnavailable)

	t.Run("clamd comes up", func(t *testing.T) {
		var mu sync.Mutex
		failures := 3
		s := &fakeScanner{judge: func([]byte) (clamav.Result, error) {
			mu.Lock()
			defer mu.Unlock()
			if failures > 0 {
				failures--
				return clamav.Result{}, unreachable
			}
			return clamav.Result{}, nil
		}}
		g := NewGate(s, Options{MaxEntries: 16})
		p := writeFile(t, "clean")
		got := recvPrewarm(t, prewarmAsync(t.Context(), g, openFile(t, p), "f"))
		if got.r != PrewarmClean || got.err != nil {
			t.Fatalf("Prewarm = %v, %v; want clean once clamd answers", got.r, got.err)
		}
		if n := s.Calls(); n != 4 {
			t.Errorf("scans = %d; want 4 (3 unreachable, then the verdict)", n)
		}
		if d := g.Check(t.Context(), openFile(t, p), someone); !d.Cached {
			t.Errorf("the open after prewarm was not decided from the cache: %+v", d)
		}
	})
	t.Run("stopped while waiting", func(t *testing.T) {
		s := &fakeScanner{judge: func([]byte) (clamav.Result, error) { return clamav.Result{}, unreachable }}
		g := NewGate(s, Options{MaxEntries: 16})
		ctx, cancel := context.WithCancel(t.Context())
		pw := prewarmAsync(ctx, g, openFile(t, writeFile(t, "x")), "x")
		waitFor(t, "a few attempts", func() bool { return s.Calls() >= 3 })
		cancel()
		if got := recvPrewarm(t, pw); got.r != PrewarmError || !errors.Is(got.err, context.Canceled) {
			t.Errorf("Prewarm = %v, %v; want error, context.Canceled", got.r, got.err)
		}
	})
	t.Run("stopped during an attempt", func(t *testing.T) {
		// The walk stops while clamd is being tried (the attempt then
		// fails as unreachable): stopped all the same, not an error of
		// clamd's.
		ctx, cancel := context.WithCancel(t.Context())
		s := &fakeScanner{judge: func([]byte) (clamav.Result, error) { cancel(); return clamav.Result{}, unreachable }}
		g := NewGate(s, Options{MaxEntries: 16})
		if got := recvPrewarm(t, prewarmAsync(ctx, g, openFile(t, writeFile(t, "x")), "x")); got.r != PrewarmError || !errors.Is(got.err, context.Canceled) {
			t.Errorf("Prewarm = %v, %v; want error, context.Canceled", got.r, got.err)
		}
	})
	t.Run("other errors are not retried", func(t *testing.T) {
		s := &fakeScanner{judge: func([]byte) (clamav.Result, error) {
			return clamav.Result{}, fmt.Errorf("%w: garbage", clamav.ErrProtocol)
		}}
		g := NewGate(s, Options{MaxEntries: 16})
		got := recvPrewarm(t, prewarmAsync(t.Context(), g, openFile(t, writeFile(t, "x")), "x"))
		if got.r != PrewarmError || !errors.Is(got.err, clamav.ErrProtocol) {
			t.Errorf("Prewarm = %v, %v; want error, ErrProtocol", got.r, got.err)
		}
		if n := s.Calls(); n != 1 {
			t.Errorf("scans = %d; want 1", n)
		}
	})
}
