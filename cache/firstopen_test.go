package cache

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// BenchmarkGateFirstOpen is the gate's part of a first open of a 16 KiB
// file (issue #12): a decision that needs a scan, by a real clamd over
// FILDES, every verdict made stale before each open (Invalidate). With
// and without connections kept open between scans (clamav.Options.
// Sessions). It reports this process's CPU time per open (cpu-ns/op)
// beside the wall time, which clamd's share dominates.
func BenchmarkGateFirstOpen(b *testing.B) {
	c := clamdtest.New(b, clamdtest.Options{})
	network, addr, err := clamav.ParseAddress(c.Address())
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "f")
	if err := os.WriteFile(p, bytes.Repeat([]byte("sixteen KiB file"), 1024), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, sessions := range []int{0, 1} {
		name := map[int]string{0: "new-connection-per-scan", 1: "session"}[sessions]
		b.Run(name, func(b *testing.B) {
			cl, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: 10 * time.Second, Sessions: sessions})
			if err != nil {
				b.Fatal(err)
			}
			pool, err := clamav.NewPool([]*clamav.Client{cl}, clamav.PoolOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			g := NewGate(pool, Options{MaxEntries: 16, VerifyMaxSize: 1 << 20, Timeout: 10 * time.Second})
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			cpu := func() time.Duration {
				var ru syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
				return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
			start := cpu()
			for b.Loop() {
				g.Invalidate(0)
				if d := g.Check(b.Context(), f, Opener{}); !d.Allow || d.Cached {
					b.Fatalf("decision %+v", d)
				}
			}
			b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
		})
	}
}
