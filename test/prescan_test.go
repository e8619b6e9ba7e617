package test

// End-to-end tests of the scans after a write: past the 64 that run at
// once, the files written wait in a queue (without a descriptor) and are
// scanned when a running one is over, after any open waiting for a scan.

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestPrescanQueuedMounted: more files written through the mount than
// scans after a write may run at once, while clamd (behind a proxy
// holding scans) judges none: every file gets exactly one scan once
// released, none skipped; an open of a queued file meanwhile is served
// before the queued scans, and its queued scan then scans nothing.
func TestPrescanQueuedMounted(t *testing.T) {
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	addr := opsFreePort(t)
	m := mounttest.Start(t, mounttest.Options{Config: fmt.Sprintf("[clamd]\naddress = %q\nmax_concurrent = 1\n[metrics]\nlisten = %q\n",
		proxy.Address(), addr)})
	metric := func(name string) float64 { return opsScrape(t, "http://"+addr+"/metrics")[name] }
	started := `clamfuse_scans_after_write_total{result="started"}`
	queued := `clamfuse_scans_after_write_total{result="queued"}`
	dropped := `clamfuse_scans_after_write_total{result="dropped"}`

	const running, extra = 64, 16 // cache.maxPrescans
	const files = running + extra
	contents := make([][]byte, files)
	name := func(i int) string { return fmt.Sprintf("f%03d", i) }
	proxy.Hold()
	m.Within(t, time.Minute, "writing the files", func() {
		for i := range files {
			contents[i] = pseudoRandom(4<<10, uint64(7700+i))
			putFile(t, m.Path(name(i)), contents[i])
		}
	})
	// The kernel releases the writers in the background.
	eventually(t, logBound, "every writer released", func() bool { return metric(started)+metric(queued) == files })
	if s, q := metric(started), metric(queued); s != running || q != extra {
		t.Fatalf("scans after write started %v, queued %v; want %d, %d", s, q, running, extra)
	}
	first := proxy.Next(t, scanBound)

	// An open of the last file queued waits for a scan slot, held by the
	// scan at the proxy; 63 scans after a write wait for one too.
	last := files - 1
	read := make(chan error, 1)
	go func() {
		b, err := os.ReadFile(m.Path(name(last)))
		if err == nil && !bytes.Equal(b, contents[last]) {
			err = fmt.Errorf("read %d bytes of %s, not the file's", len(b), name(last))
		}
		read <- err
	}()
	eventually(t, logBound, "the open waiting on its scan", func() bool { return metric("clamfuse_cache_misses_total") == 1 })
	first.Release()
	if s := proxy.Next(t, scanBound); s.Path != m.Backing(name(last)) {
		t.Fatalf("after the first scan, clamd got a scan of %s; want the open's, of %s", s.Path, m.Backing(name(last)))
	} else {
		s.Release()
	}
	select {
	case err := <-read:
		mustDo(t, err)
	case <-time.After(scanBound):
		m.Abort()
		t.Fatal("the open did not return after its scan")
	}
	proxy.Release()
	eventually(t, scanBound, "every scan after write over", func() bool { return metric(started) == files })
	eventually(t, scanBound, "every file scanned", func() bool { return proxy.Scans() == files })
	// Every file has its verdict: reading them all scans nothing more.
	m.Within(t, time.Minute, "reading the files", func() {
		for i := range files {
			if b, err := os.ReadFile(m.Path(name(i))); err != nil || !bytes.Equal(b, contents[i]) {
				t.Errorf("read %s: %v (%d bytes)", name(i), err, len(b))
			}
		}
	})
	if n := proxy.Scans(); n != files {
		t.Errorf("clamd got %d scans; want %d: each file once, the opened one by its open", n, files)
	}
	if d := metric(dropped); d != 0 {
		t.Errorf("%v scans after write dropped; want 0", d)
	}
}
