package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/clamav"
)

// fakeScanner is a Scanner for tests. The zero value reads the file it is
// given as INSTREAM would (its first size bytes) and finds it clean.
type fakeScanner struct {
	// judge decides on the bytes read; nil means clean.
	judge func(data []byte) (clamav.Result, error)
	// mutate runs after the bytes of scan number call (from 1) were read,
	// as if the file changed while clamd was still busy with it.
	mutate func(call int)
	// block, when not nil, holds every scan until it is closed (or, when
	// honorCtx, until the scan's context is done).
	block    chan struct{}
	honorCtx bool

	mu          sync.Mutex // guards the fields below
	calls       int
	cancelled   int // scans that ended because their context did (honorCtx)
	inflight    int
	maxInflight int
	seen        [][]byte   // what each scan read, in call order
	files       []fileSeen // what each scan was given, in call order
}

// fileSeen is what a scan learnt about the descriptor it was given.
type fileSeen struct {
	st    unix.Stat_t
	flags int     // fcntl F_GETFL
	fd    uintptr // its number
}

func (s *fakeScanner) String() string { return "fake:clamd" }

func (s *fakeScanner) ScanFile(ctx context.Context, f *os.File, size int64) (clamav.Result, error) {
	var fs fileSeen
	if err := unix.Fstat(int(f.Fd()), &fs.st); err != nil {
		return clamav.Result{}, fmt.Errorf("%w: %w", clamav.ErrRead, err)
	}
	fs.flags, _ = unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	fs.fd = f.Fd()
	r := io.NewSectionReader(f, 0, size)
	s.mu.Lock()
	s.files = append(s.files, fs)
	s.calls++
	call := s.calls
	s.inflight++
	s.maxInflight = max(s.maxInflight, s.inflight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.mu.Unlock()
	}()

	data, err := io.ReadAll(r)
	s.mu.Lock()
	s.seen = append(s.seen, data)
	s.mu.Unlock()
	if err != nil {
		return clamav.Result{}, fmt.Errorf("%w: %w", clamav.ErrRead, err)
	}
	if s.mutate != nil {
		s.mutate(call)
	}
	if s.block != nil {
		if s.honorCtx {
			select {
			case <-s.block:
			case <-ctx.Done():
				s.mu.Lock()
				s.cancelled++
				s.mu.Unlock()
				// As *clamav.Client reports it.
				return clamav.Result{}, fmt.Errorf("%w: %w", clamav.ErrTimeout, ctx.Err())
			}
		} else {
			<-s.block
		}
	}
	if s.judge == nil {
		return clamav.Result{}, nil
	}
	return s.judge(data)
}

func (s *fakeScanner) File(call int) fileSeen {
	s.mu.Lock()
	defer s.mu.Unlock()
	if call < 1 || call > len(s.files) {
		return fileSeen{}
	}
	return s.files[call-1]
}

func (s *fakeScanner) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *fakeScanner) Cancelled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelled
}

func (s *fakeScanner) Inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight
}

func (s *fakeScanner) MaxInflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInflight
}

func (s *fakeScanner) Seen(call int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if call < 1 || call > len(s.seen) {
		return nil
	}
	return s.seen[call-1]
}

// hold makes s hold its scans until release is called, or the test ends.
// Call it before the first scan.
func (s *fakeScanner) hold(t *testing.T) (release func()) {
	s.block = make(chan struct{})
	release = sync.OnceFunc(func() { close(s.block) })
	t.Cleanup(release)
	return release
}

const eicarSig = "Eicar-Test-Signature"

// infectedIf finds eicarSig in any stream that contains marker.
func infectedIf(marker string) func([]byte) (clamav.Result, error) {
	return func(data []byte) (clamav.Result, error) {
		if bytes.Contains(data, []byte(marker)) {
			return clamav.Result{Infected: true, Signature: eicarSig}, nil
		}
		return clamav.Result{}, nil
	}
}

func failWith(err error) func([]byte) (clamav.Result, error) {
	return func([]byte) (clamav.Result, error) { return clamav.Result{}, err }
}

// writeFile creates a file holding content in a fresh temporary directory.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// openFile opens p for reading, closed when the test ends.
func openFile(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func appendTo(t *testing.T, p, s string) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Error(err)
	}
}

// keyOfPath is the cache key of p's current state under db.
func keyOfPath(t *testing.T, p, db string) Key {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return KeyOf(&st, db)
}

// gateKey is the key g gives p's current state (its database and
// generations included).
func gateKey(t *testing.T, g *Gate, p string) Key {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return g.keyOf(&st)
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkAsync runs g.Check in a goroutine; the result arrives on the channel.
func checkAsync(ctx context.Context, g *Gate, f *os.File, who Opener) <-chan Decision {
	ch := make(chan Decision, 1)
	go func() { ch <- g.Check(ctx, f, who) }()
	return ch
}

// recv waits for a Decision, failing the test after 5s.
func recv(t *testing.T, ch <-chan Decision) Decision {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("Check did not return within 5s")
		return Decision{}
	}
}

// errAny in an expect matches any non-nil error.
var errAny = errors.New("any error")

// expect is what a Decision should say.
type expect struct {
	allow  bool
	reason Reason
	cached bool
	sig    string // Verdict.Signature
	err    error  // nil: no error; errAny: any; else errors.Is
}

func checkDecision(t *testing.T, label string, d Decision, w expect) {
	t.Helper()
	if d.Allow != w.allow || d.Reason != w.reason || d.Cached != w.cached || d.Verdict.Signature != w.sig {
		t.Errorf("%s: Decision{Allow: %v, Reason: %q, Cached: %v, Signature: %q, Err: %v}; want {Allow: %v, Reason: %q, Cached: %v, Signature: %q}",
			label, d.Allow, d.Reason, d.Cached, d.Verdict.Signature, d.Err, w.allow, w.reason, w.cached, w.sig)
	}
	switch {
	case w.err == nil && d.Err != nil:
		t.Errorf("%s: Err = %v; want nil", label, d.Err)
	case w.err == errAny && d.Err == nil:
		t.Errorf("%s: Err = nil; want an error", label)
	case w.err != nil && w.err != errAny && !errors.Is(d.Err, w.err):
		t.Errorf("%s: Err = %v; want one wrapping %v", label, d.Err, w.err)
	}
	if d.Verdict.Signature != "" && !d.Verdict.Infected {
		t.Errorf("%s: Verdict %+v has a signature but is not infected", label, d.Verdict)
	}
}

var someone = Opener{Path: "dir/file", Pid: 4242, Uid: 1000}

// TestGatePolicies checks one file twice: the first Check decides from a
// scan (or without one), the second shows whether that was cached.
func TestGatePolicies(t *testing.T) {
	clean := expect{allow: true, reason: ReasonClean}
	cleanCached := expect{allow: true, reason: ReasonClean, cached: true}
	infected := expect{reason: ReasonInfected, sig: eicarSig}
	infectedCached := expect{reason: ReasonInfected, sig: eicarSig, cached: true}
	unavailable := fmt.Errorf("clamd unix:/run/clamd.sock: %w: dial: no such file", clamav.ErrUnavailable)
	sizeLimit := fmt.Errorf("clamd unix:/run/clamd.sock: %w", clamav.ErrSizeLimit)

	tests := []struct {
		name          string
		content       string
		judge         func([]byte) (clamav.Result, error)
		opts          Options
		first, second expect
		scans         int // after both Checks
		entries       int // cached verdicts after both Checks
	}{
		{name: "empty file: allowed unscanned", content: "",
			first: expect{allow: true, reason: ReasonEmpty}, second: expect{allow: true, reason: ReasonEmpty}},
		{name: "clean: allowed and cached", content: "hello world",
			first: clean, second: cleanCached, scans: 1, entries: 1},
		{name: "infected: denied and cached", content: "X5O!P%@AP EICAR",
			judge: infectedIf("EICAR"), first: infected, second: infectedCached, scans: 1, entries: 1},
		{name: "infected even with every allow policy", content: "EICAR",
			judge: infectedIf("EICAR"), opts: Options{AllowOnError: true, AllowOversize: true},
			first: infected, second: infectedCached, scans: 1, entries: 1},
		{name: "scan error: denied, not cached", content: "hello",
			judge:  failWith(unavailable),
			first:  expect{reason: ReasonError, err: clamav.ErrUnavailable},
			second: expect{reason: ReasonError, err: clamav.ErrUnavailable}, scans: 2},
		{name: "scan error, on_error allow: allowed, not cached", content: "hello",
			judge: failWith(unavailable), opts: Options{AllowOnError: true},
			first:  expect{allow: true, reason: ReasonError, err: clamav.ErrUnavailable},
			second: expect{allow: true, reason: ReasonError, err: clamav.ErrUnavailable}, scans: 2},
		{name: "over max_size: denied unscanned", content: "12345", opts: Options{MaxSize: 4},
			first: expect{reason: ReasonOversize, err: errAny}, second: expect{reason: ReasonOversize, err: errAny}},
		{name: "over max_size, on_oversize allow: allowed unscanned", content: "12345",
			opts:  Options{MaxSize: 4, AllowOversize: true},
			first: expect{allow: true, reason: ReasonOversize, err: errAny}, second: expect{allow: true, reason: ReasonOversize, err: errAny}},
		{name: "at max_size: scanned", content: "1234", opts: Options{MaxSize: 4},
			first: clean, second: cleanCached, scans: 1, entries: 1},
		{name: "clamd size limit: oversize, denied", content: "hello",
			judge:  failWith(sizeLimit),
			first:  expect{reason: ReasonOversize, err: clamav.ErrSizeLimit},
			second: expect{reason: ReasonOversize, err: clamav.ErrSizeLimit}, scans: 2},
		{name: "clamd size limit, on_oversize allow: allowed", content: "hello",
			judge: failWith(sizeLimit), opts: Options{AllowOversize: true},
			first:  expect{allow: true, reason: ReasonOversize, err: clamav.ErrSizeLimit},
			second: expect{allow: true, reason: ReasonOversize, err: clamav.ErrSizeLimit}, scans: 2},
		{name: "clamd size limit is not on_error", content: "hello",
			judge: failWith(sizeLimit), opts: Options{AllowOnError: true},
			first:  expect{reason: ReasonOversize, err: clamav.ErrSizeLimit},
			second: expect{reason: ReasonOversize, err: clamav.ErrSizeLimit}, scans: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &fakeScanner{judge: tt.judge}
			opts := tt.opts
			opts.MaxEntries = 16
			g := NewGate(s, opts)
			f := openFile(t, writeFile(t, tt.content))

			d := g.Check(t.Context(), f, someone)
			checkDecision(t, "first Check", d, tt.first)
			if d.Reason == ReasonClean || d.Reason == ReasonInfected {
				if d.Verdict.Backend != s.String() {
					t.Errorf("Verdict.Backend = %q; want %q", d.Verdict.Backend, s.String())
				}
			}
			checkDecision(t, "second Check", g.Check(t.Context(), f, someone), tt.second)
			if got := s.Calls(); got != tt.scans {
				t.Errorf("scans = %d; want %d", got, tt.scans)
			}
			if got := g.Cache().Len(); got != tt.entries {
				t.Errorf("cached verdicts = %d; want %d", got, tt.entries)
			}
		})
	}
}

// A directory (or anything not a regular file) has no bytes to scan.
func TestGateNotRegular(t *testing.T) {
	s := &fakeScanner{judge: failWith(clamav.ErrUnavailable)}
	g := NewGate(s, Options{MaxEntries: 16})
	d := g.Check(t.Context(), openFile(t, t.TempDir()), someone)
	checkDecision(t, "directory", d, expect{allow: true, reason: ReasonEmpty})
	if s.Calls() != 0 {
		t.Errorf("scans = %d; want 0", s.Calls())
	}
}

// The scanner reads the whole file from offset 0 whatever the offset of the
// caller's descriptor, and the scan leaves that offset alone (the handle
// reads through it).
func TestGateScansExactBytes(t *testing.T) {
	content := make([]byte, 3<<20+12345) // several of any sane chunk size, and a ragged end
	for i := range content {
		content[i] = byte(rand.N(256))
	}
	tests := []struct {
		name   string
		offset int64 // read this much of f before Check
	}{
		{"fresh descriptor", 0},
		{"offset moved by a read", 100},
		{"offset at end", int64(len(content))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := writeFile(t, string(content))
			f := openFile(t, p)
			if tt.offset > 0 {
				if _, err := io.CopyN(io.Discard, f, tt.offset); err != nil {
					t.Fatal(err)
				}
			}
			s := &fakeScanner{}
			g := NewGate(s, Options{MaxEntries: 16})
			checkDecision(t, "Check", g.Check(t.Context(), f, someone), expect{allow: true, reason: ReasonClean})
			if got := s.Seen(1); !bytes.Equal(got, content) {
				t.Errorf("scanner read %d bytes, not the file's %d (first difference at %d)",
					len(got), len(content), firstDiff(got, content))
			}
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				t.Fatal(err)
			}
			if off != tt.offset {
				t.Errorf("offset after Check = %d; want %d", off, tt.offset)
			}
		})
	}
}

// TestGateScansOwnDescriptor: the scanner is given the gate's own
// descriptor of the opener's inode (the one its fstat check judges, and
// the one FILDES passes to clamd): same device and inode as the opener's,
// but its own open, read-only with O_NOATIME (the test owns the file),
// which the opener's is not.
func TestGateScansOwnDescriptor(t *testing.T) {
	p := writeFile(t, "judge this inode")
	f := openFile(t, p)
	var want unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &want); err != nil {
		t.Fatal(err)
	}
	// The name goes away: only the descriptor leads to the inode now.
	if err := os.Rename(p, p+".moved"); err != nil {
		t.Fatal(err)
	}
	s := &fakeScanner{}
	g := NewGate(s, Options{MaxEntries: 16})
	checkDecision(t, "Check", g.Check(t.Context(), f, someone), expect{allow: true, reason: ReasonClean})
	got := s.File(1)
	if got.st.Dev != want.Dev || got.st.Ino != want.Ino {
		t.Errorf("scanned inode %d:%d; want the opener's %d:%d", got.st.Dev, got.st.Ino, want.Dev, want.Ino)
	}
	if got.flags&unix.O_ACCMODE != unix.O_RDONLY || got.flags&unix.O_NOATIME == 0 {
		t.Errorf("scanned descriptor flags %#x; want O_RDONLY|O_NOATIME", got.flags)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Concurrent opens of one state share one scan.
func TestGateSingleflight(t *testing.T) {
	const openers = 50
	s := &fakeScanner{}
	release := s.hold(t)
	g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4})
	p := writeFile(t, "shared content")

	var results []<-chan Decision
	for range openers {
		results = append(results, checkAsync(t.Context(), g, openFile(t, p), someone))
	}
	// A miss is counted once the open has started or joined the scan:
	// when all are counted, all wait on the one held scan.
	waitFor(t, "every opener to join the scan", func() bool { return g.Stats().Misses == openers })
	release()
	for i, ch := range results {
		checkDecision(t, fmt.Sprintf("opener %d", i), recv(t, ch), expect{allow: true, reason: ReasonClean})
	}
	if got := s.Calls(); got != 1 {
		t.Errorf("scans = %d; want exactly 1 for %d concurrent opens", got, openers)
	}
	if st := g.Stats(); st.Scans != 1 || st.Misses != openers || st.Hits != 0 {
		t.Errorf("Stats = %+v; want 1 scan, %d misses, 0 hits", st, openers)
	}
	checkDecision(t, "later open", g.Check(t.Context(), openFile(t, p), someone), expect{allow: true, reason: ReasonClean, cached: true})
}

// MaxConcurrent bounds the scans in flight, across different files.
func TestGateMaxConcurrent(t *testing.T) {
	const files, limit = 6, 2
	s := &fakeScanner{}
	release := s.hold(t)
	g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: limit})
	var queued atomic.Int32
	g.hooks.slotWait = func() { queued.Add(1) }

	var results []<-chan Decision
	for i := range files {
		f := openFile(t, writeFile(t, fmt.Sprintf("file %d", i)))
		results = append(results, checkAsync(t.Context(), g, f, someone))
	}
	// Every scan past the limit finds the slots taken and waits.
	waitFor(t, "the scans past the limit to queue for a slot", func() bool { return queued.Load() == files-limit })
	waitFor(t, "the first scans to start", func() bool { return s.Calls() == limit })
	if got := s.Calls(); got != limit {
		t.Errorf("%d scans started while %d were held; want at most %d", got, limit, limit)
	}
	release()
	for i, ch := range results {
		checkDecision(t, fmt.Sprintf("file %d", i), recv(t, ch), expect{allow: true, reason: ReasonClean})
	}
	if got := s.Calls(); got != files {
		t.Errorf("scans = %d; want %d", got, files)
	}
	if got := s.MaxInflight(); got != limit {
		t.Errorf("at most %d scans ran at once; want %d", got, limit)
	}
}

// A file written to while it is scanned is scanned again, and the verdict
// given and cached is the one of the state the file ended in.
func TestGateRescan(t *testing.T) {
	tests := []struct {
		name     string
		maxSize  int64
		mutate   func(t *testing.T, p string, call int)
		want     expect
		scans    int
		seenLast string // what the last scan read
		cached   bool   // a verdict for the final state is cached
	}{
		{
			name: "clean, then infected while scanned",
			mutate: func(t *testing.T, p string, call int) {
				if call == 1 {
					appendTo(t, p, " EICAR")
				}
			},
			want:  expect{reason: ReasonInfected, sig: eicarSig},
			scans: 2, seenLast: "harmless EICAR", cached: true,
		},
		{
			name: "grew over max_size while scanned",
			mutate: func(t *testing.T, p string, call int) {
				appendTo(t, p, " and a lot more")
			},
			maxSize: 20,
			want:    expect{reason: ReasonOversize, err: clamav.ErrSizeLimit},
			scans:   1, seenLast: "harmless",
		},
		{
			name:   "changes on every scan: unstable",
			mutate: func(t *testing.T, p string, call int) { appendTo(t, p, ".") },
			want:   expect{reason: ReasonUnstable, err: ErrUnstable},
			scans:  maxAttempts, seenLast: "harmless" + string(bytes.Repeat([]byte("."), maxAttempts-1)),
		},
		{
			name: "emptied while scanned",
			mutate: func(t *testing.T, p string, call int) {
				if err := os.Truncate(p, 0); err != nil {
					t.Error(err)
				}
			},
			// Allowed (nothing left to read), on the scan's zero Verdict.
			want:  expect{allow: true, reason: ReasonClean},
			scans: 1, seenLast: "harmless",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := writeFile(t, "harmless")
			before := keyOfPath(t, p, "")
			s := &fakeScanner{judge: infectedIf("EICAR"), mutate: func(call int) { tt.mutate(t, p, call) }}
			g := NewGate(s, Options{MaxEntries: 16, MaxSize: tt.maxSize})

			checkDecision(t, "Check", g.Check(t.Context(), openFile(t, p), someone), tt.want)
			if got := s.Calls(); got != tt.scans {
				t.Errorf("scans = %d; want %d", got, tt.scans)
			}
			if got := string(s.Seen(s.Calls())); got != tt.seenLast {
				t.Errorf("last scan read %q; want %q", got, tt.seenLast)
			}
			if _, ok := g.Cache().Get(before); ok {
				t.Errorf("a verdict is cached for the state the file left during the scan")
			}
			after := keyOfPath(t, p, "")
			v, ok := g.Cache().Get(after)
			if ok != tt.cached {
				t.Fatalf("verdict cached for the final state: %v; want %v", ok, tt.cached)
			}
			if ok && (v.Infected != (tt.want.reason == ReasonInfected) || v.Signature != tt.want.sig) {
				t.Errorf("cached verdict %+v does not match the decision", v)
			}
			wantLen := 0
			if tt.cached {
				wantLen = 1
			}
			if got := g.Cache().Len(); got != wantLen {
				t.Errorf("cached verdicts = %d; want %d", got, wantLen)
			}
		})
	}
}

// A verdict made under one signature database is not used under another.
func TestGateDatabase(t *testing.T) {
	s := &fakeScanner{}
	g := NewGate(s, Options{MaxEntries: 16})
	if got := g.Database(); got != "" {
		t.Errorf("Database() = %q before SetDatabase; want \"\"", got)
	}
	p := writeFile(t, "hello")
	f := openFile(t, p)
	steps := []struct {
		db     string // SetDatabase before the Check, unless ""
		cached bool
		scans  int
	}{
		{"", false, 1},
		{"", true, 1},
		{"27000", false, 2},
		{"", true, 2},
		{"27001", false, 3},
		{"27000", true, 3}, // the verdict under 27000 is still there
	}
	for i, st := range steps {
		if st.db != "" {
			g.SetDatabase(st.db)
			if got := g.Database(); got != st.db {
				t.Fatalf("step %d: Database() = %q; want %q", i, got, st.db)
			}
		}
		checkDecision(t, fmt.Sprintf("step %d", i), g.Check(t.Context(), f, someone),
			expect{allow: true, reason: ReasonClean, cached: st.cached})
		if got := s.Calls(); got != st.scans {
			t.Errorf("step %d: scans = %d; want %d", i, got, st.scans)
		}
	}
	if _, ok := g.Cache().Get(keyOfPath(t, p, "27001")); !ok {
		t.Errorf("no verdict cached under database 27001")
	}
}

// A scan that never ends is bounded by Timeout, queueing for a slot
// included. The open that runs the scan (lead) relies on the scanner
// giving up at its context's deadline, as *clamav.Client does; an open
// that joined a scan relies on nothing. Wall-clock bounds are loose on
// purpose.
func TestGateTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	tests := []struct {
		name     string
		honorCtx bool // the scanner gives up at its context's deadline
		queued   bool // the Check waits for the slot of another stuck scan
		joined   bool // the Check joins a scan another open runs
		allow    bool // on_error = "allow"
	}{
		{name: "scanner ignores its context, scan joined", joined: true},
		{name: "scanner honors its context", honorCtx: true},
		{name: "scanner honors its context, scan joined", honorCtx: true, joined: true},
		{name: "waiting for a scan slot", queued: true},
		{name: "on_error allow", honorCtx: true, allow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &fakeScanner{honorCtx: tt.honorCtx}
			release := s.hold(t)
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 1, Timeout: timeout, AllowOnError: tt.allow})
			if tt.queued {
				checkAsync(t.Context(), g, openFile(t, writeFile(t, "stuck")), someone)
				waitFor(t, "the first scan to hold the slot", func() bool { return s.Calls() == 1 })
			}
			p := writeFile(t, "hello")
			if tt.joined {
				// Its own bound from a moment later than ours.
				checkAsync(t.Context(), g, openFile(t, p), someone)
				waitFor(t, "the scan to start", func() bool { return s.Calls() == 1 })
			}
			f := openFile(t, p)
			start := time.Now()
			d := recv(t, checkAsync(t.Context(), g, f, someone))
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Check took %v with Timeout %v", elapsed, timeout)
			}
			checkDecision(t, "Check", d, expect{allow: tt.allow, reason: ReasonError, err: clamav.ErrTimeout})
			if g.Cache().Len() != 0 {
				t.Errorf("a verdict was cached")
			}
			if (tt.queued || tt.joined) && s.Calls() != 1 {
				t.Errorf("scans = %d; want 1 (the second file never got a slot, or the scan was joined)", s.Calls())
			}
			// Let the abandoned scans end before the files are closed:
			// see TestGateCloseAfterCancelledCheck.
			release()
			waitFor(t, "the abandoned scans to end", func() bool { return s.Inflight() == 0 })
		})
	}
}

// An opener that gives up gets ReasonCancelled at once; the scan goes on
// for the others and its verdict is cached. The scan this opener ran
// itself (lead) stops waiting for its answer and is sent again by the
// goroutine it is passed on to.
func TestGateCancelled(t *testing.T) {
	s := &fakeScanner{judge: infectedIf("EICAR"), honorCtx: true}
	release := s.hold(t)
	g := NewGate(s, Options{MaxEntries: 16})
	p := writeFile(t, "EICAR")
	ctx, cancel := context.WithCancel(t.Context())
	leaver := checkAsync(ctx, g, openFile(t, p), someone)
	waitFor(t, "the scan to start", func() bool { return s.Calls() == 1 })
	stayer := checkAsync(t.Context(), g, openFile(t, p), someone)
	waitFor(t, "the second opener to join the scan", func() bool { return g.Stats().Misses == 2 })

	cancel()
	checkDecision(t, "cancelled opener", recv(t, leaver), expect{reason: ReasonCancelled, err: context.Canceled})
	release()
	checkDecision(t, "waiting opener", recv(t, stayer), expect{reason: ReasonInfected, sig: eicarSig})
	checkDecision(t, "later opener", g.Check(t.Context(), openFile(t, p), someone),
		expect{reason: ReasonInfected, sig: eicarSig, cached: true})
	if calls, cut := s.Calls(), s.Cancelled(); calls != 2 || cut != 1 {
		t.Errorf("scans = %d, %d of them cut short; want 2, 1 (the leaver's, and the one sent again for the stayer)", calls, cut)
	}
}

// The gate's own descriptor of a file (the one the scan reads) and the
// open's count in demand go with the scan: already gone when Check returns
// to an opener that waited for the verdict (the opener joins the scan
// itself, with no goroutine of its own left to clean up after it), and
// gone once the scan is over for one that left before.
func TestGateLetsGoOfScans(t *testing.T) {
	s := &fakeScanner{honorCtx: true}
	release := s.hold(t)
	g := NewGate(s, Options{MaxEntries: 16, Timeout: 5 * time.Second})
	p := writeFile(t, "left")
	leaver, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch := checkAsync(ctx, g, leaver, someone)
	waitFor(t, "the scan to start", func() bool { return s.Calls() == 1 })
	cancel()
	checkDecision(t, "cancelled opener", recv(t, ch), expect{reason: ReasonCancelled, err: context.Canceled})
	leaver.Close()
	if n, w := descriptorsOf(t, p), waiting(g); n != 1 || w != 1 {
		t.Errorf("while the abandoned scan runs: %d descriptors of the file, %d scans waited for; want 1, 1", n, w)
	}
	release()
	waitFor(t, "the abandoned scan to let go of the file", func() bool { return descriptorsOf(t, p) == 0 && waiting(g) == 0 })

	q := writeFile(t, "waited for")
	d := g.Check(t.Context(), openFile(t, q), someone)
	checkDecision(t, "waiting opener", d, expect{allow: true, reason: ReasonClean})
	if n, w := descriptorsOf(t, q), waiting(g); n != 1 || w != 0 {
		t.Errorf("when Check returned: %d descriptors of the file, %d scans waited for; want 1 (the opener's), 0", n, w)
	}
}

// descriptorsOf counts this process's descriptors open on path p.
func descriptorsOf(t *testing.T, p string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == p {
			n++
		}
	}
	return n
}

// Regression: the shared scan reopened the opener's *os.File in its own
// goroutine, after Check may have returned. An opener cancelled at once
// (fs/ closes the descriptor on any denial, this one included) left the
// scan a closed descriptor: every other opener waiting on that scan was
// denied with "reading file: bad file descriptor", and had the number been
// reused by another open in between, the scan would have judged that other
// file. The race detector also flags f.Fd() racing with f.Close().
func TestGateCloseAfterCancelledCheck(t *testing.T) {
	// One P: the scan goroutine runs only once this one blocks, which is
	// the worst (and a perfectly possible) interleaving.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for i := range 5 {
		s := &fakeScanner{}
		release := s.hold(t)
		g := NewGate(s, Options{MaxEntries: 16, Timeout: 5 * time.Second})
		p := writeFile(t, fmt.Sprintf("file %d", i))
		leaver, stayer := openFile(t, p), openFile(t, p)

		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		checkDecision(t, "cancelled opener", g.Check(ctx, leaver, someone), expect{reason: ReasonCancelled, err: context.Canceled})
		ch := checkAsync(t.Context(), g, stayer, someone)
		leaver.Close()
		// Counted once both have started or joined the one held scan.
		waitFor(t, "the second opener to join the scan", func() bool { return g.Stats().Misses == 2 })
		release()
		checkDecision(t, fmt.Sprintf("round %d: waiting opener", i), recv(t, ch), expect{allow: true, reason: ReasonClean})
		if got := s.Calls(); got != 1 {
			t.Errorf("round %d: scans = %d; want 1", i, got)
		}
	}
}

func TestGateStats(t *testing.T) {
	s := &fakeScanner{judge: func(data []byte) (clamav.Result, error) {
		switch string(data) {
		case "EICAR":
			return clamav.Result{Infected: true, Signature: eicarSig}, nil
		case "broken":
			return clamav.Result{}, clamav.ErrProtocol
		}
		return clamav.Result{}, nil
	}}
	g := NewGate(s, Options{MaxEntries: 16, MaxSize: 10})
	clean := openFile(t, writeFile(t, "clean"))
	infected := openFile(t, writeFile(t, "EICAR"))
	broken := openFile(t, writeFile(t, "broken"))
	big := openFile(t, writeFile(t, "far over ten bytes"))
	empty := openFile(t, writeFile(t, ""))

	steps := []struct {
		f    *os.File
		want Stats // after the Check
	}{
		{clean, Stats{Misses: 1, Scans: 1}},
		{clean, Stats{Hits: 1, Misses: 1, Scans: 1}},
		{infected, Stats{Hits: 1, Misses: 2, Scans: 2, Infected: 1, Denied: 1}},
		{infected, Stats{Hits: 2, Misses: 2, Scans: 2, Infected: 2, Denied: 2}},
		{broken, Stats{Hits: 2, Misses: 3, Scans: 3, ScanErrors: 1, Infected: 2, Denied: 3}},
		{broken, Stats{Hits: 2, Misses: 4, Scans: 4, ScanErrors: 2, Infected: 2, Denied: 4}},
		{big, Stats{Hits: 2, Misses: 4, Scans: 4, ScanErrors: 2, Infected: 2, Denied: 5}},
		{empty, Stats{Hits: 2, Misses: 4, Scans: 4, ScanErrors: 2, Infected: 2, Denied: 5}},
	}
	for i, st := range steps {
		g.Check(t.Context(), st.f, someone)
		if got := g.Stats(); got != st.want {
			t.Errorf("step %d (%s): Stats = %+v; want %+v", i, st.f.Name(), got, st.want)
		}
	}
}

// Every denial with a reason worth an operator's look, and every open let
// through unscanned, is logged at WARN with who asked; clean opens are not.
func TestGateLog(t *testing.T) {
	tests := []struct {
		name    string
		content string
		judge   func([]byte) (clamav.Result, error)
		opts    Options
		level   string // "" for no line at WARN or above
		msg     string
		attrs   map[string]any // beyond path, pid and uid
	}{
		{name: "infected", content: "EICAR", judge: infectedIf("EICAR"),
			level: "WARN", msg: "infected file denied",
			attrs: map[string]any{"signature": eicarSig, "cached": false, "clamd": "fake:clamd"}},
		{name: "scan error", content: "x", judge: failWith(clamav.ErrUnavailable),
			level: "WARN", msg: "file denied without a verdict",
			attrs: map[string]any{"reason": "error", "err": clamav.ErrUnavailable.Error()}},
		{name: "oversize", content: "12345", opts: Options{MaxSize: 4},
			level: "WARN", msg: "file denied without a verdict", attrs: map[string]any{"reason": "oversize"}},
		{name: "allowed on error", content: "x", judge: failWith(clamav.ErrUnavailable), opts: Options{AllowOnError: true},
			level: "WARN", msg: "file not scanned, allowed by policy", attrs: map[string]any{"reason": "error"}},
		{name: "clean", content: "x"},
		{name: "empty", content: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			opts := tt.opts
			opts.MaxEntries = 16
			opts.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
			g := NewGate(&fakeScanner{judge: tt.judge}, opts)
			g.Check(t.Context(), openFile(t, writeFile(t, tt.content)), Opener{Path: "a/b c.exe", Pid: 31337, Uid: 1001})

			var lines []map[string]any
			dec := json.NewDecoder(&buf)
			for dec.More() {
				var m map[string]any
				if err := dec.Decode(&m); err != nil {
					t.Fatalf("log is not JSON lines: %v", err)
				}
				lines = append(lines, m)
			}
			if tt.level == "" {
				if len(lines) != 0 {
					t.Errorf("logged %v; want nothing at WARN", lines)
				}
				return
			}
			if len(lines) != 1 {
				t.Fatalf("logged %d lines %v; want 1", len(lines), lines)
			}
			m := lines[0]
			wantAttrs := map[string]any{
				"level": tt.level, "msg": tt.msg,
				"path": "a/b c.exe", "pid": float64(31337), "uid": float64(1001),
			}
			for k, v := range tt.attrs {
				wantAttrs[k] = v
			}
			for k, v := range wantAttrs {
				if m[k] != v {
					t.Errorf("%s = %#v; want %#v (line %v)", k, m[k], v, m)
				}
			}
		})
	}
}
