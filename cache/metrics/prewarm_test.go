package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/cache/metrics"
)

// Every prewarm result is exported from the first scrape, at zero until
// counted.
func TestPrewarmed(t *testing.T) {
	m := metrics.New()
	m.Prewarmed(cache.PrewarmClean)
	m.Prewarmed(cache.PrewarmClean)
	m.Prewarmed(cache.PrewarmInfected)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`clamfuse_prewarm_files_total{result="clean"} 2`,
		`clamfuse_prewarm_files_total{result="infected"} 1`,
		`clamfuse_prewarm_files_total{result="cached"} 0`,
		`clamfuse_prewarm_files_total{result="skipped"} 0`,
		`clamfuse_prewarm_files_total{result="error"} 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
