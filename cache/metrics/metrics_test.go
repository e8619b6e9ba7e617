package metrics_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/cache/actions"
	"github.com/clamfuse/clamfuse/cache/metrics"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// Scrape fetches url and returns each sample line's value by its name
// and labels as printed ("clamfuse_scans_total{result=\"clean\"}").
func Scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", l)
		}
		out[l[:i]] = v
	}
	return out
}

// TestMetrics scrapes after known traffic through a gate on a real clamd.
func TestMetrics(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	network, addr, _ := clamav.ParseAddress(c.Address())
	cl, err := clamav.New(clamav.Options{Network: network, Address: addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dead, _ := clamav.New(clamav.Options{Network: "unix", Address: filepath.Join(t.TempDir(), "dead.sock"), Timeout: time.Second})
	pool, err := clamav.NewPool([]*clamav.Client{cl, dead}, clamav.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool.Check(t.Context())
	runner := actions.New(actions.Options{})
	m := metrics.New()
	g := cache.NewGate(m.Scanner(pool), cache.Options{MaxEntries: 100, MaxSize: 1 << 20})
	m.SetSources(metrics.Sources{Gate: g, Pool: pool, Actions: runner,
		Refusals: func() (uint64, uint64, uint64) { return 3, 2, 1 }})
	gate := m.Gate(g)

	srv, err := m.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	dir := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	gate.SetTimeGranularity(st.Dev, time.Nanosecond)
	open := func(name string, content []byte) cache.Decision {
		p := filepath.Join(dir, name)
		if content != nil {
			if err := os.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
			// A verdict is cached once the file's times are old
			// enough (cache/racy.go).
			settled := time.Now().Add(g.TimeWindow(st.Dev))
			for time.Now().Before(settled) {
				time.Sleep(time.Millisecond)
			}
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		return gate.Check(ctx, f, cache.Opener{Path: name})
	}
	clean := []byte("twelve bytes")
	open("clean", clean)                  // miss, scan clean
	open("clean", nil)                    // hit
	open("eicar", clamdtest.EICAR())      // miss, scan infected
	open("eicar", nil)                    // hit, infected
	open("empty", []byte{})               // no scan
	open("big", make([]byte, (1<<20)+1))  // oversize, no scan
	if d := open("eicar", nil); d.Allow { // still denied
		t.Fatal("EICAR allowed")
	}

	s := Scrape(t, srv.URL())
	want := map[string]float64{
		`clamfuse_opens_total{decision="allow",reason="clean"}`:                           2,
		`clamfuse_opens_total{decision="allow",reason="empty"}`:                           1,
		`clamfuse_opens_total{decision="deny",reason="infected"}`:                         3,
		`clamfuse_opens_total{decision="deny",reason="oversize"}`:                         1,
		`clamfuse_opens_total{decision="deny",reason="error"}`:                            0,
		`clamfuse_denials_total{reason="infected"}`:                                       3,
		`clamfuse_denials_total{reason="oversize"}`:                                       1,
		`clamfuse_scans_total{result="clean"}`:                                            1,
		`clamfuse_scans_total{result="infected"}`:                                         1,
		`clamfuse_scans_total{result="error"}`:                                            0,
		`clamfuse_scanned_bytes_total`:                                                    float64(len(clean) + len(clamdtest.EICAR())),
		`clamfuse_scan_duration_seconds_count`:                                            2,
		`clamfuse_cache_hits_total`:                                                       3,
		`clamfuse_cache_misses_total`:                                                     2,
		`clamfuse_cache_entries`:                                                          2,
		`clamfuse_cache_evictions_total`:                                                  0,
		`clamfuse_cache_caching`:                                                          1,
		`clamfuse_cache_changed_total`:                                                    0,
		`clamfuse_cache_racy_total`:                                                       0,
		`clamfuse_cache_carried_total`:                                                    0,
		`clamfuse_opens_while_written_total`:                                              0,
		`clamfuse_refusals_total{limit="max_open_per_user"}`:                              3,
		`clamfuse_refusals_total{limit="max_open"}`:                                       2,
		`clamfuse_refusals_total{limit="waiting_requests"}`:                               1,
		`clamfuse_clamd_up{backend="` + c.Address() + `"}`:                                1,
		`clamfuse_clamd_up{backend="` + dead.String() + `"}`:                              0,
		`clamfuse_clamd_scans_total{backend="` + c.Address() + `"}`:                       2,
		`clamfuse_clamd_errors_total{backend="` + dead.String() + `",kind="unavailable"}`: 1,
		`clamfuse_clamd_transport_info{backend="` + c.Address() + `",transport="fildes"}`: 1,
		`clamfuse_detections_total`:                                                       0,
	}
	for k, v := range want {
		if got, ok := s[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v); want %v", k, got, ok, v)
		}
	}
	if _, ok := s["go_goroutines"]; !ok {
		t.Error("no go_goroutines: Go collector missing")
	}
}
