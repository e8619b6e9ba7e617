package fs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/fs/internal/fuse"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// TestStockAfterWrite: once the scan after a write has judged a small
// file written through the mount, the kernel's page cache holds exactly
// the bytes judged (stock.go), and the next open reads none of them
// through clamfuse (no READ). The page cache is never served stale: a
// change made directly in the backing directory afterwards (a rewrite of
// the same size, infected contents, a write through a shared mapping
// that keeps size and mtime) or through the mount (a writer opened after
// the store) is what the next open reads, or is denied; infected
// contents written through the mount are never stored, and denied. With
// passthrough and without (the writer's WRITEs then go through FUSE's
// page cache).
func TestStockAfterWrite(t *testing.T) {
	clean := []byte(strings.Repeat("judged clean, written through the mount\n", 400)) // 16000 bytes
	other := []byte(strings.Repeat("JUDGED CLEAN, WRITTEN BEHIND THE MOUNT\n\n", 400))
	if len(other) != len(clean) {
		t.Fatalf("test data: %d and %d bytes, want the same size", len(other), len(clean))
	}
	for _, mode := range passthroughModes {
		t.Run(mode.name, func(t *testing.T) {
			g := &countingGate{}
			mode.mo.FS = Options{Gate: g, AttrValid: time.Second, EntryValid: time.Second, Invalidation: true, WatchedValid: time.Hour}
			backing, m, seen := testMountGate(t, mode.mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: 1 << 20})
			tmp := t.TempDir()
			mustWrite(t, filepath.Join(tmp, "clean"), clean)
			mustWrite(t, filepath.Join(tmp, "eicar"), clamdtest.EICAR())
			for i, tc := range []struct {
				name string
				// after changes the file (its backing path b, its path
				// through the mount f) once the judged bytes were
				// stored; want is what a read through the mount must
				// then give, "" for Permission denied.
				after   func(t *testing.T, b, f string)
				want    []byte
				mayRead bool // READs may reach clamfuse at that read
			}{
				{name: "unchanged", after: func(*testing.T, string, string) {}, want: clean},
				{name: "rewritten behind the mount, same size", after: func(t *testing.T, b, _ string) {
					mustWrite(t, b, other)
				}, want: other, mayRead: true},
				{name: "infected behind the mount", after: func(t *testing.T, b, _ string) {
					mustWrite(t, b, clamdtest.EICAR())
				}},
				{name: "shared mapping behind the mount, times put back", after: func(t *testing.T, b, _ string) {
					mapWrite(t, b, other)
				}, want: other, mayRead: true},
				{name: "a writer through the mount after the store", after: func(t *testing.T, _, f string) {
					// Read at once after the writer's close, while the
					// scan after that write may still run.
					runAs(t, m, 0, "exec 3<>"+f+"; printf 'JUDGED' >&3; exec 3>&-")
				}, want: append([]byte("JUDGED"), clean[6:]...), mayRead: true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					name := "f" + string(rune('a'+i))
					b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
					stocked := m.fsys.stocked.Load()
					runOn(t, m, "cp", filepath.Join(tmp, "clean"), f)
					// The kernel keeps the inode, and its page cache,
					// whatever drop_caches other processes run.
					pin, err := unix.Open(f, unix.O_PATH|unix.O_CLOEXEC, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer unix.Close(pin)
					waitFor(t, "the judged bytes stored", func() bool { return m.fsys.stocked.Load() > stocked })
					tc.after(t, b, f)
					seen.take()
					seen.takeOps()
					got, err := readThrough(t, m, f)
					reads, _ := seen.take()
					ops := seen.nodeOps(nodeID(t, m, b))
					if tc.want == nil {
						if err == nil || !strings.Contains(string(got), "Permission denied") {
							t.Fatalf("cat: %v, %d bytes; want Permission denied", err, len(got))
						}
						return
					}
					if err != nil || string(got) != string(tc.want) {
						t.Fatalf("cat: %v, %d bytes, %q...; want the %d bytes %q...", err, len(got), head(got), len(tc.want), head(tc.want))
					}
					if !tc.mayRead && (len(reads) != 0 || ops["GetattrRequest"] != 0) {
						t.Errorf("cat made %v; want no READ (the page cache stocked) and no GETATTR (attributes refreshed after the write)", ops)
					}
				})
			}

			t.Run("infected through the mount", func(t *testing.T) {
				b, f := filepath.Join(backing, "infected"), filepath.Join(m.Target, "infected")
				prescans := g.prescans.Load()
				runOn(t, m, "cp", filepath.Join(tmp, "eicar"), f)
				waitFor(t, "the scan after the write", func() bool { return g.prescans.Load() > prescans })
				if got, err := readThrough(t, m, f); err == nil || !strings.Contains(string(got), "Permission denied") {
					t.Errorf("cat: %v, %d bytes; want Permission denied", err, len(got))
				}
				if keptState(t, m, b) != 0 {
					t.Error("the page cache of an infected file is recorded as kept")
				}
			})
		})
	}
}

// keptState is the state the node of backing file p records the kernel's
// page cache to hold (Node.keep), 0 for none or no node.
func keptState(t *testing.T, m *Mounted, p string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	m.fsys.treeMu.Lock()
	n := m.fsys.nodes.get(inoKey{st.Dev, st.Ino})
	m.fsys.treeMu.Unlock()
	if n == nil {
		return 0
	}
	n.hmu.Lock()
	defer n.hmu.Unlock()
	return n.keep
}

// nodeID is the kernel's NodeID of the node of backing file p.
func nodeID(t *testing.T, m *Mounted, p string) fuse.NodeID {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	m.fsys.treeMu.Lock()
	n := m.fsys.nodes.get(inoKey{st.Dev, st.Ino})
	m.fsys.treeMu.Unlock()
	if n == nil {
		t.Fatalf("no node for %s", p)
	}
	return fuse.NodeID(n.serveID.Load())
}

// readThrough cats f from another process: its output and error.
func readThrough(t *testing.T, m *Mounted, f string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := hangReported(t, exec.CommandContext(ctx, "cat", f)).CombinedOutput()
	if ctx.Err() != nil {
		abortMount(t, m.Target)
		t.Fatalf("cat %s: no answer within a minute; the connection was aborted", f)
	}
	return out, err
}

// mapWrite writes b over the start of file p through a shared mapping,
// then puts p's access and modification times back: only the contents
// (and the change time) tell the change.
func mapWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, 0, len(b), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(mem, b)
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNano(p, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
		t.Fatal(err)
	}
}

// head is the start of b, for messages.
func head(b []byte) []byte { return b[:min(len(b), 24)] }

// TestStockChecks: the store puts in the page cache only bytes whose
// digest is the one judged, and only while nobody has the file open
// (stock.go): a file that changed since it was judged, or one open
// through the mount (whose reader or writer shares the page cache), is
// left alone.
func TestStockChecks(t *testing.T) {
	clean := []byte(strings.Repeat("judged clean\n", 1000))
	other := []byte(strings.Repeat("JUDGED CLEAN\n", 1000))
	backing, m, _ := testMountGate(t, MountOptions{Passthrough: true}, cache.Options{MaxEntries: 100, TTL: time.Hour,
		Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	d := cache.NewDigest()
	d.Write(clean)
	judged := d.Sum()
	for _, tc := range []struct {
		name   string
		holds  []byte // what the file holds at the store
		open   bool   // a process has it open through the mount meanwhile
		stored bool
	}{
		{"the bytes judged", clean, false, true},
		{"other bytes", other, false, false},
		{"open through the mount", clean, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
			mustWrite(t, b, tc.holds)
			runOn(t, m, "cat", f) // the node, known to the kernel
			// Its RELEASE is sent in the background.
			waitFor(t, "the cat's release", func() bool { return openHandles(t, m, b) == 0 })
			if tc.open {
				cmd := exec.Command("sh", "-c", "exec 3<"+f+"; read x")
				in, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer cmd.Wait()
				defer in.Close()
				waitFor(t, "the file open", func() bool { return openHandles(t, m, b) == 1 })
			}
			var st unix.Stat_t
			if err := unix.Stat(b, &st); err != nil {
				t.Fatal(err)
			}
			m.fsys.treeMu.Lock()
			n := m.fsys.nodes.get(inoKey{st.Dev, st.Ino})
			m.fsys.treeMu.Unlock()
			n.dropKeepCache()
			src, err := os.Open(b)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			k := cache.Key{Dev: st.Dev, Ino: st.Ino, Size: st.Size, MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}
			m.fsys.StockJudged(src, k, judged)
			if got := keptState(t, m, b); (got == stateDigest(k, judged)) != tc.stored {
				t.Errorf("page cache recorded as holding %x; want stored %v", got, tc.stored)
			}
		})
	}
}
