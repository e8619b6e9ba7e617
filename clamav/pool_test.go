package clamav_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

func client(t *testing.T, address string) *clamav.Client {
	t.Helper()
	network, addr, err := clamav.ParseAddress(address)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(t *testing.T, opts clamav.PoolOptions, addrs ...string) *clamav.Pool {
	t.Helper()
	var cs []*clamav.Client
	for _, a := range addrs {
		cs = append(cs, client(t, a))
	}
	p, err := clamav.NewPool(cs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func scanBytes(p *clamav.Pool, b []byte) (clamav.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return p.Scan(ctx, io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b))))
}

func status(p *clamav.Pool, addr string) clamav.BackendStatus {
	for _, s := range p.Status() {
		if s.Address == addr {
			return s
		}
	}
	return clamav.BackendStatus{}
}

// TestPoolSpreadsAndJudges: with two healthy clamds, scans go to both,
// verdicts are clamd's, and Result.Backend names who judged.
func TestPoolSpreadsAndJudges(t *testing.T) {
	a := clamdtest.New(t, clamdtest.Options{})
	b := clamdtest.New(t, clamdtest.Options{})
	var changes []clamav.Change
	p := pool(t, clamav.PoolOptions{OnChange: func(c clamav.Change) { changes = append(changes, c) }}, a.Address(), b.Address())
	if up := p.Check(t.Context()); up != 2 {
		t.Fatalf("Check: %d up, want 2: %+v", up, p.Status())
	}
	if db := p.Database(); !strings.HasPrefix(db, "ClamAV ") || strings.Contains(db, "|") {
		t.Errorf("Database() = %q; want one clamd version (both run the same)", db)
	}
	if len(changes) != 1 || changes[0].Old != "" || changes[0].Database != p.Database() {
		t.Errorf("OnChange calls = %+v; want one, from \"\" to %q", changes, p.Database())
	}
	if got, want := p.String(), a.Address()+", "+b.Address(); got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}

	backends := map[string]int{}
	for i := range 10 {
		res, err := scanBytes(p, []byte(fmt.Sprintf("clean file %d", i)))
		if err != nil || res.Infected {
			t.Fatalf("scan %d: %+v, %v; want clean", i, res, err)
		}
		backends[res.Backend]++
	}
	if backends[a.Address()] == 0 || backends[b.Address()] == 0 || len(backends) != 2 {
		t.Errorf("clean scans by backend = %v; want both clamds used", backends)
	}
	res, err := scanBytes(p, clamdtest.EICAR())
	if err != nil || !res.Infected || res.Signature != clamdtest.EICARSignature {
		t.Fatalf("EICAR: %+v, %v; want %s", res, err, clamdtest.EICARSignature)
	}
	if res.Backend != a.Address() && res.Backend != b.Address() {
		t.Errorf("EICAR judged by %q; want one of the two", res.Backend)
	}
	total := status(p, a.Address()).Scans + status(p, b.Address()).Scans
	if total != 11 {
		t.Errorf("scans sent = %d; want 11 (no retries)", total)
	}
}

// TestPoolFailover: one clamd dies mid-run and scans go on on the other;
// both down is an error (the gate denies); one back serves again at once,
// before any health check has run.
func TestPoolFailover(t *testing.T) {
	a := clamdtest.New(t, clamdtest.Options{})
	b := clamdtest.New(t, clamdtest.Options{})
	p := pool(t, clamav.PoolOptions{}, a.Address(), b.Address())
	p.Check(t.Context())

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	stopped := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				if i == 5 && w == 0 {
					if err := a.Stop(); err != nil {
						errs <- err
					}
					close(stopped)
				}
				content := []byte(fmt.Sprintf("worker %d file %d", w, i))
				if i%5 == 4 {
					content = append(content, clamdtest.Marker()...)
				}
				res, err := scanBytes(p, content)
				switch {
				case err != nil:
					errs <- fmt.Errorf("worker %d scan %d: %v", w, i, err)
				case res.Infected != (i%5 == 4):
					errs <- fmt.Errorf("worker %d scan %d: %+v", w, i, res)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	<-stopped
	if s := status(p, a.Address()); s.Up {
		t.Errorf("stopped clamd still up: %+v", s)
	}
	if s := status(p, b.Address()); !s.Up || s.Scans == 0 {
		t.Errorf("surviving clamd: %+v; want up and scanning", s)
	}

	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := scanBytes(p, []byte("nobody to judge me")); !errors.Is(err, clamav.ErrUnavailable) {
		t.Fatalf("both down: err = %v; want ErrUnavailable", err)
	}
	if up := p.Check(t.Context()); up != 0 {
		t.Fatalf("both down: Check says %d up", up)
	}

	if err := a.Restart(); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		res, err := scanBytes(p, []byte(fmt.Sprintf("after restart %d", i)))
		if err != nil || res.Backend != a.Address() {
			t.Fatalf("after restart, scan %d: %+v, %v; want clean from %s", i, res, err, a.Address())
		}
	}
	if up := p.Check(t.Context()); up != 1 || !status(p, a.Address()).Up {
		t.Errorf("after restart: %d up, %+v", up, p.Status())
	}
}

// TestPoolNoRetry: a verdict and a size limit are final; only failures
// of a clamd move a scan to another.
func TestPoolNoRetry(t *testing.T) {
	opts := clamdtest.Options{StreamMaxLength: "1K"}
	a := clamdtest.New(t, opts)
	b := clamdtest.New(t, opts)
	p := pool(t, clamav.PoolOptions{}, a.Address(), b.Address())
	p.Check(t.Context())
	if _, err := scanBytes(p, bytes.Repeat([]byte("x"), 64<<10)); !errors.Is(err, clamav.ErrSizeLimit) {
		t.Fatalf("err = %v; want ErrSizeLimit", err)
	}
	if res, err := scanBytes(p, clamdtest.EICAR()); err != nil || !res.Infected {
		t.Fatalf("EICAR: %+v, %v", res, err)
	}
	if total := status(p, a.Address()).Scans + status(p, b.Address()).Scans; total != 2 {
		t.Errorf("scans sent = %d; want 2: neither was retried", total)
	}
}

// onlyReader hides every method but Read.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(b []byte) (int, error) { return o.r.Read(b) }

// TestPoolNeedsSeekToRetry: a reader that cannot be rewound is not sent
// again, and the scan fails (closed) with the first error.
func TestPoolNeedsSeekToRetry(t *testing.T) {
	b := clamdtest.New(t, clamdtest.Options{})
	dead := "unix:" + filepath.Join(t.TempDir(), "dead.sock")
	p := pool(t, clamav.PoolOptions{}, dead, b.Address())
	// Not checked: both count as up, and round robin tries the dead one
	// first on every other scan.
	var sawNoRewind, sawRetry bool
	for i := range 4 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		res, err := p.Scan(ctx, onlyReader{strings.NewReader(fmt.Sprintf("plain %d", i))})
		cancel()
		switch {
		case err == nil && res.Backend == b.Address():
		case errors.Is(err, clamav.ErrUnavailable) && strings.Contains(err.Error(), "cannot be rewound"):
			sawNoRewind = true
		default:
			t.Fatalf("scan %d: %+v, %v", i, res, err)
		}
		// Once marked down, the dead one is no longer first; make it
		// look unchecked-up again only by a new pool.
		if sawNoRewind {
			break
		}
	}
	if !sawNoRewind {
		t.Errorf("never tried the dead clamd first")
	}
	// With a seekable reader the same pool retries on the live one.
	p2 := pool(t, clamav.PoolOptions{}, dead, b.Address())
	for i := range 2 {
		res, err := scanBytes(p2, []byte(fmt.Sprintf("seekable %d", i)))
		if err != nil || res.Backend != b.Address() {
			t.Fatalf("seekable scan %d: %+v, %v", i, res, err)
		}
		sawRetry = sawRetry || status(p2, dead).Scans > 0
	}
	if !sawRetry {
		t.Errorf("the dead clamd was never tried, so no retry was tested")
	}
}

// TestPoolRetryable pins which errors fail over.
func TestPoolRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
		kind string
	}{
		{clamav.ErrUnavailable, true, "unavailable"},
		{clamav.ErrTimeout, true, "timeout"},
		{clamav.ErrProtocol, true, "protocol"},
		{clamav.ErrSizeLimit, false, "size_limit"},
		{clamav.ErrClamd, true, "clamd"},
		{clamav.ErrRead, false, "read"},
		{context.Canceled, false, "canceled"},
		{fmt.Errorf("%w: %w", clamav.ErrRead, clamav.ErrTimeout), false, "timeout"},
		{&net.OpError{Op: "dial"}, false, "other"},
	} {
		if got := clamav.Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v; want %v", tt.err, got, tt.want)
		}
		if got := clamav.ErrorKind(tt.err); got != tt.kind {
			t.Errorf("ErrorKind(%v) = %q; want %q", tt.err, got, tt.kind)
		}
	}
}

// TestPoolPeriodicCheck: Start polls, and SetBackends swaps clamds while
// keeping the state of those that stay.
func TestPoolPeriodicCheck(t *testing.T) {
	a := clamdtest.New(t, clamdtest.Options{})
	b := clamdtest.New(t, clamdtest.Options{})
	changed := make(chan clamav.Change, 8)
	p := pool(t, clamav.PoolOptions{CheckInterval: 100 * time.Millisecond,
		OnChange: func(c clamav.Change) { changed <- c }}, a.Address())
	p.Start()
	select {
	case c := <-changed:
		if c.Database == "" {
			t.Errorf("change to an empty database: %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no check round within 5s")
	}
	if err := p.SetBackends([]*clamav.Client{client(t, a.Address()), client(t, b.Address())}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !status(p, b.Address()).Up {
		if time.Now().After(deadline) {
			t.Fatalf("new backend not up after 5s: %+v", p.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := status(p, a.Address()); !s.Up || s.Version == "" {
		t.Errorf("kept backend lost its state: %+v", s)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	for status(p, a.Address()).Up {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("stopped backend still up: %+v", p.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A down backend keeps its version: failing over does not change
	// the database.
	if s := status(p, a.Address()); s.Version == "" || s.Errors["unavailable"] == 0 {
		t.Errorf("down backend: %+v; want its last version and an unavailable error counted", s)
	}
}
