package cache

import (
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// stocker records what the Gate tells it (Stocker), and opens nothing
// again (Reopener).
type stocker struct {
	mu   sync.Mutex
	told []stockedCall
}

type stockedCall struct {
	k    Key
	sum  uint64
	data string // read through the descriptor given
}

func (s *stocker) ReopenWritten(dev, ino uint64) (*os.File, error) { return nil, os.ErrNotExist }

func (s *stocker) StockJudged(f *os.File, k Key, sum uint64) {
	b, _ := io.ReadAll(io.NewSectionReader(f, 0, k.Size+1))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.told = append(s.told, stockedCall{k, sum, string(b)})
}

func (s *stocker) calls() []stockedCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stockedCall(nil), s.told...)
}

// TestPrescanStocks: a scan after a write that leaves a clean verdict
// with a digest of the contents cached tells the filesystem (Stocker),
// with the gate's own descriptor of the file, the state judged and that
// digest, so that it may store those very bytes in the page cache; an
// infected file, or one whose contents are not verified, is not told of.
func TestPrescanStocks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		verify  int64
		checked bool // an open judged it before the scan after the write: cached
		told    bool
	}{
		{"clean, verified", "a clean download", 1 << 20, false, true},
		{"clean, verified, cached", "a clean download", 1 << 20, true, true},
		{"infected", "an EICAR download", 1 << 20, false, false},
		{"infected, cached", "an EICAR download", 1 << 20, true, false},
		{"clean, not verified", "a clean download", 0, false, false},
		{"clean, over verify_max_size", "a clean download", 4, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fakeScanner{judge: infectedIf("EICAR")}
			g := NewGate(s, Options{MaxEntries: 16, MaxConcurrent: 4, Timeout: time.Minute, VerifyMaxSize: tc.verify})
			p := writeFile(t, tc.content)
			st := &stocker{}
			if tc.checked {
				g.Check(t.Context(), openFile(t, p), someone)
			}
			g.Prescan(openFile(t, p), someone, st)
			waitFor(t, "the scan after the write to end", func() bool { return g.prescans.Load() == 0 })
			calls := st.calls()
			if !tc.told {
				if len(calls) != 0 {
					t.Errorf("told %d times; want never", len(calls))
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("told %d times; want once", len(calls))
			}
			c := calls[0]
			_, sum, ok := g.lru.GetSum(g.cacheKey(gateKey(t, g, p)))
			if c.k != gateKey(t, g, p) || !ok || c.sum != sum || sum == 0 {
				t.Errorf("told %+v, digest %x; want the cached state %+v, digest %x", c.k, c.sum, gateKey(t, g, p), sum)
			}
			if c.data != tc.content {
				t.Errorf("the descriptor given read %q; want the file's %q", c.data, tc.content)
			}
		})
	}
}
