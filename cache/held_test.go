package cache

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/clamav"
)

// holder is a Holder for tests: it counts its calls and keeps its buffer.
type holder struct {
	none  bool // give no buffer
	mu    sync.Mutex
	calls []int64
	buf   []byte
}

func (h *holder) Hold(size int64) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, size)
	if h.none {
		return nil
	}
	h.buf = make([]byte, size)
	return h.buf
}

// TestGateHandsJudgedBytes: an open's own scan of a file whose contents
// are verified reads them into the buffer the opener gave (Opener.Into):
// under a lease, as it reads them for their digest before clamd's scan
// (one read for both); on a private copy, after clamd's verdict. It says
// so (Decision.Held) only when they are exactly the bytes judged clean,
// of the state decided on: never for an infected file, a file changed
// under the scan (judged again in another state), an open decided from
// the cache, a file over verify_max_size, or when the opener gave no
// buffer.
func TestGateHandsJudgedBytes(t *testing.T) {
	content := strings.Repeat("judged bytes\n", 1000)
	for _, tc := range []struct {
		name      string
		judge     func([]byte) (clamav.Result, error)
		mutate    bool // the file changes (times and contents) during the first scan
		none      bool // the holder gives no buffer
		verifyMax int64
		cached    bool // a second open, decided from the cache
		held      bool
		holds     int // calls of Hold, where the file is judged on a private copy
		leased    int // calls of Hold, where it is judged under a lease (lease.go)
	}{
		{name: "clean", held: true, holds: 1, leased: 1},
		{name: "infected", judge: func([]byte) (clamav.Result, error) {
			return clamav.Result{Infected: true, Signature: "Eicar-Test-Signature"}, nil
		}, leased: 1},
		// Under a lease: a buffer for the first scan, whose lease the
		// write breaks, and one for the scan of the copy after it.
		{name: "changed under the scan", mutate: true, holds: 1, leased: 2},
		{name: "no buffer", none: true, holds: 1, leased: 1},
		{name: "over verify_max_size", verifyMax: 100},
		{name: "decided from the cache", cached: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, content)
			s := &fakeScanner{judge: tc.judge}
			if tc.mutate {
				s.mutate = func(call int) {
					if call == 1 {
						// Another state: judged again, not the one the
						// opener's fstat saw.
						if err := os.WriteFile(p, []byte(strings.ToUpper(content)), 0o644); err != nil {
							t.Error(err)
						}
						future := time.Now().Add(time.Hour)
						if err := os.Chtimes(p, future, future); err != nil {
							t.Error(err)
						}
					}
				}
			}
			vm := tc.verifyMax
			if vm == 0 {
				vm = 1 << 20
			}
			g := NewGate(s, Options{MaxEntries: 16, VerifyMaxSize: vm})
			if tc.cached {
				g.Check(t.Context(), openFile(t, p), someone)
			}
			h := &holder{none: tc.none}
			who := someone
			who.Into = h
			f := openFile(t, p)
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			who.Stat = &st
			d := g.Check(t.Context(), f, who)
			if d.Held != tc.held {
				t.Errorf("Held = %v (%s); want %v", d.Held, d.Reason, tc.held)
			}
			holds := tc.holds
			if leasable(t, p) {
				holds = tc.leased
			}
			if len(h.calls) != holds {
				t.Errorf("Hold called %d times (%v); want %d", len(h.calls), h.calls, holds)
			}
			if d.Held {
				if !bytes.Equal(h.buf, []byte(content)) || d.Key.Size != int64(len(content)) {
					t.Errorf("the buffer held %d bytes %q..., state of %d bytes; want the %d bytes judged", len(h.buf), h.buf[:min(20, len(h.buf))], d.Key.Size, len(content))
				}
				dg := NewDigest()
				dg.Write(h.buf)
				if dg.Sum() != d.Sum {
					t.Error("the bytes held are not those of the digest decided on")
				}
			}
		})
	}
}

// leasable reports whether the gate takes a read lease on the file p
// (lease.go) rather than judging a private copy of it.
func leasable(t *testing.T, p string) bool {
	t.Helper()
	f := openFile(t, p)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if !lease(f, st.Dev) {
		return false
	}
	unlease(f)
	return true
}
