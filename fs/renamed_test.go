package fs

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
)

// TestOpenAfterRenameOfWritten: a file written through the mount under a
// temporary name, then renamed (a browser's or Samba's download), maybe
// with its times set first (rsync, cp -p), is opened without a scan once
// its scan after the write is over: the rename moves its ctime, utimes
// its mtime, neither the contents. A file whose contents are verified
// keeps its verdict by their digest; a larger one has it carried over
// each change made through the mount, under a read lease that shows
// nobody wrote it meanwhile (cache/carry.go). (Before, every such file was
// scanned again at its first open; the larger ones until 2026-12-05.)
func TestOpenAfterRenameOfWritten(t *testing.T) {
	data := []byte(strings.Repeat("a download written under a temporary name\n", 300))
	for _, mode := range passthroughModes {
		for _, size := range []struct {
			name   string
			verify int64 // cache.verify_max_size
		}{
			{"verified", 1 << 20},
			{"not verified", 4 << 10},
		} {
			t.Run(mode.name+", "+size.name, func(t *testing.T) {
				testOpenAfterRenameOfWritten(t, mode.mo, size.verify, data)
			})
		}
	}
}

func testOpenAfterRenameOfWritten(t *testing.T, mo MountOptions, verify int64, data []byte) {
	g := &countingGate{}
	mo.FS = Options{Gate: g, AttrValid: time.Second, EntryValid: time.Second}
	backing, m, _ := testMountGate(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
		Timeout: time.Minute, VerifyMaxSize: verify})
	gate := g.Gate.(*cache.Gate)
	src := filepath.Join(t.TempDir(), "src")
	mustWrite(t, src, data)
	for i, tc := range []struct {
		name  string
		times bool // set before the rename
		link  bool // a new name linked, then the old one removed, for the rename
	}{
		{"renamed", false, false},
		{"times set, renamed", true, false},
		{"linked, temporary name removed", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("f%d", i)
			part, final := filepath.Join(m.Target, name+".part"), filepath.Join(m.Target, name)
			stocked := m.fsys.stocked.Load()
			runOn(t, m, "cp", src, part)
			// The scan after the write is over, its verdict cached.
			if int64(len(data)) <= verify {
				waitFor(t, "the judged bytes stored", func() bool { return m.fsys.stocked.Load() > stocked })
			} else {
				waitFor(t, "an open decided from the cache", func() bool {
					hits := gate.Stats().Hits
					readThrough(t, m, part)
					return gate.Stats().Hits > hits
				})
			}
			judged := ctimeOf(t, filepath.Join(backing, name+".part"))
			if tc.times {
				// By path, as rsync sets them (touch without -h
				// opens the file for writing: a writer, whose
				// close is scanned after).
				runOn(t, m, "touch", "-h", "-d", "2020-01-02 03:04:05", part)
			}
			// The kernel stamps ctime from a clock that moves by
			// ticks: rename until it moved.
			for from, to := part, final; ; from, to = to, from {
				if tc.link {
					runOn(t, m, "ln", from, to)
					runOn(t, m, "rm", from)
				} else {
					runOn(t, m, "mv", from, to)
				}
				if to == final && ctimeOf(t, filepath.Join(backing, name)) != judged {
					break
				}
			}
			before := gate.Stats()
			got, err := readThrough(t, m, final)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("cat: %v, %d bytes; want the %d bytes written", err, len(got), len(data))
			}
			if after := gate.Stats(); after.Misses != before.Misses || after.Hits != before.Hits+1 {
				t.Errorf("the open after the rename: %d misses, %d hits; want 0 and 1 (the verdict of the scan after the write)",
					after.Misses-before.Misses, after.Hits-before.Hits)
			}
		})
	}
}

// ctimeOf is the ctime of the backing file p, in nanoseconds.
func ctimeOf(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ctim.Nano()
}

// TestExchangeKeepsVerdicts: renameat2(RENAME_EXCHANGE) through the mount
// swaps two files not verified (over cache.verify_max_size), both judged
// and cached: it moves both ctimes, and both verdicts go with their
// inodes (cache/carry.go), so the opens after it under the swapped names
// scan nothing and read each file's own bytes.
func TestExchangeKeepsVerdicts(t *testing.T) {
	for _, mode := range passthroughModes {
		t.Run(mode.name, func(t *testing.T) {
			g := &countingGate{}
			mode.mo.FS = Options{Gate: g, AttrValid: time.Second, EntryValid: time.Second}
			backing, m, _ := testMountGate(t, mode.mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: 4 << 10})
			gate := g.Gate.(*cache.Gate)
			data := map[string][]byte{
				"a": []byte(strings.Repeat("the first file, larger than verified\n", 300)),
				"b": []byte(strings.Repeat("the second file, larger than verified too\n", 300)),
			}
			for name, b := range data {
				mustWrite(t, filepath.Join(backing, name), b)
				waitFor(t, "an open of "+name+" decided from the cache", func() bool {
					hits := gate.Stats().Hits
					readThrough(t, m, filepath.Join(m.Target, name))
					return gate.Stats().Hits > hits
				})
			}
			judged := ctimeOf(t, filepath.Join(backing, "a"))
			exchange := `import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), 2) != 0:
    sys.exit("renameat2: errno %d" % ctypes.get_errno())`
			// Until the ctime moved (the kernel's clock moves by ticks),
			// an even number of times: each name back to its file.
			for n := 1; ; n++ {
				runOn(t, m, "python3", "-c", exchange, filepath.Join(m.Target, "a"), filepath.Join(m.Target, "b"))
				if n%2 == 1 && ctimeOf(t, filepath.Join(backing, "b")) != judged {
					break
				}
			}
			before := gate.Stats()
			for name, other := range map[string]string{"a": "b", "b": "a"} {
				got, err := readThrough(t, m, filepath.Join(m.Target, name))
				if err != nil || !bytes.Equal(got, data[other]) {
					t.Fatalf("cat %s: %v, %.40q; want the bytes of %s", name, err, got, other)
				}
			}
			if after := gate.Stats(); after.Misses != before.Misses || after.Hits != before.Hits+2 || after.Carried < 2 {
				t.Errorf("the opens after the exchange: %d misses, %d hits, %d verdicts carried; want 0, 2 and at least 2",
					after.Misses-before.Misses, after.Hits-before.Hits, after.Carried)
			}
		})
	}
}
