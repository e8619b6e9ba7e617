package fs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// TestPassthroughReads proves FUSE passthrough on clamfuse's own mount,
// mount.passthrough on (MountOptions.Passthrough): a clean file opened for
// reading is read by the kernel from the descriptor the gate judged, no
// READ reaching clamfuse; an infected one is still denied at open. Without
// passthrough granted the same opens fall back to READs.
func TestPassthroughReads(t *testing.T) {
	content := strings.Repeat("clean and passed through\n", 50000)
	for _, tc := range []struct {
		name   string
		mo     MountOptions
		passed bool
	}{
		{"granted", MountOptions{Passthrough: true}, true},
		{"off", MountOptions{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backing, m, seen := testMount(t, tc.mo)
			if m.Passthrough() != tc.passed {
				t.Fatalf("passthrough granted: %v, want %v (protocol %v, %v)", m.Passthrough(), tc.passed,
					m.conn.Protocol(), m.conn.Features2())
			}
			if err := os.WriteFile(filepath.Join(backing, "clean"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(backing, "infected"), clamdtest.EICAR(), 0o644); err != nil {
				t.Fatal(err)
			}
			seen.take()
			if got := runOn(t, m, "cat", filepath.Join(m.Target, "clean")); got != content {
				t.Fatalf("read %d bytes through the mount, want the backing file's %d", len(got), len(content))
			}
			reads, _ := seen.take()
			t.Logf("%d READs", len(reads))
			if tc.passed && len(reads) != 0 {
				t.Errorf("%d READs reached clamfuse for a passed-through file", len(reads))
			}
			if !tc.passed && len(reads) == 0 {
				t.Error("no READ reached clamfuse, yet nothing was passed through")
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := hangReported(t, exec.CommandContext(ctx, "cat", filepath.Join(m.Target, "infected"))).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "Permission denied") {
				t.Errorf("cat of an infected file: %v, %q; want Permission denied", err, out)
			}
		})
	}
}

// countingGate counts what the filesystem tells the gate.
// passthroughModes are the two ways an open file's data is served: by
// the kernel from the backing file (FUSE passthrough, where the kernel
// grants it) and through clamfuse.
var passthroughModes = []struct {
	name string
	mo   MountOptions
}{
	{"passthrough", MountOptions{Passthrough: true}},
	{"off", MountOptions{}},
}

type countingGate struct {
	Gate
	checks, uncached, prescans, modified atomic.Int32
}

// wrap makes real the gate asked (testMountGate).
func (g *countingGate) wrap(real Gate) { g.Gate = real }

func (g *countingGate) Check(ctx context.Context, f *os.File, who cache.Opener) cache.Decision {
	g.checks.Add(1)
	return g.Gate.Check(ctx, f, who)
}

func (g *countingGate) CheckUncached(ctx context.Context, f *os.File, who cache.Opener) cache.Decision {
	g.uncached.Add(1)
	return g.Gate.CheckUncached(ctx, f, who)
}

func (g *countingGate) Prescan(f *os.File, who cache.Opener, again cache.Reopener) {
	g.prescans.Add(1)
	g.Gate.Prescan(f, who, again)
}

func (g *countingGate) Modified(dev, ino uint64) {
	g.modified.Add(1)
	g.Gate.Modified(dev, ino)
}

// TestPassthroughWriters: a writer in passthrough mode sends clamfuse no
// WRITE, yet every verdict of the file is stale at its open and at its
// release, the scan after the last writer's close still happens, and the
// file it changed is judged again at the next open (an infected one
// denied). A reader opened while it writes is judged by a scan, and reads
// with no READ either. Without passthrough, the same outcomes, with the
// WRITEs and READs served by clamfuse.
func TestPassthroughWriters(t *testing.T) {
	clean := strings.Repeat("clean bytes, written through the mount\n", 40000) // over passthroughMinRead
	for _, tc := range []struct {
		name   string
		mo     MountOptions
		passed bool
	}{
		{"granted", MountOptions{Passthrough: true}, true},
		{"off", MountOptions{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &countingGate{}
			tc.mo.FS.Gate = g
			backing, m, seen := testMount(t, tc.mo)
			if m.Passthrough() != tc.passed {
				t.Fatalf("passthrough granted: %v, want %v", m.Passthrough(), tc.passed)
			}
			tmp := t.TempDir()
			mustWrite(t, filepath.Join(tmp, "clean"), []byte(clean))
			mustWrite(t, filepath.Join(tmp, "infected"), clamdtest.EICAR())
			mustWrite(t, filepath.Join(backing, "f"), []byte("old\n"))
			f := filepath.Join(m.Target, "f")
			if got := runOn(t, m, "cat", f); got != "old\n" {
				t.Fatalf("cat: %q", got)
			}

			// The kernel releases cat's handle in the background, after
			// cat is gone; a writer opened before that release is not
			// passed through (the inode is open in cached mode).
			waitFor(t, "the release of cat's handle", func() bool {
				return openHandles(t, m, filepath.Join(backing, "f")) == 0
			})

			// A clean copy over it: one writer, open to close.
			seen.take()
			mod := g.modified.Load()
			runOn(t, m, "cp", filepath.Join(tmp, "clean"), f)
			waitFor(t, "the scan after the writer's close", func() bool { return g.prescans.Load() == 1 })
			reads, writes := seen.take()
			t.Logf("cp: %d WRITEs, %d READs; the gate told of %d changes", len(writes), len(reads), g.modified.Load()-mod)
			if tc.passed {
				if len(writes) != 0 {
					t.Errorf("%d WRITEs reached clamfuse from a writer in passthrough", len(writes))
				}
				if d := g.modified.Load() - mod; d < 2 {
					t.Errorf("the gate was told of %d changes; want one at the writer's open and one at its release", d)
				}
			} else if len(writes) == 0 {
				t.Error("no WRITE reached clamfuse, yet nothing was passed through")
			}
			if got := runOn(t, m, "cat", f); got != clean {
				t.Fatalf("cat after the copy: %d bytes, want %d", len(got), len(clean))
			}
			if reads, _ := seen.take(); tc.passed && len(reads) != 0 {
				t.Errorf("%d READs reached clamfuse for a passed-through file", len(reads))
			}

			// A reader while a writer holds the file open: judged by a
			// scan, never from the cache; its reads pass through too.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			holder := exec.CommandContext(ctx, "sh", "-c", "exec 3>>"+f+"; read x; exit 0")
			in, err := holder.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the writer's open", func() bool {
				return openWriters(t, m, filepath.Join(backing, "f")) == 1
			})
			unc := g.uncached.Load()
			if got := runOn(t, m, "cat", f); got != clean {
				t.Fatalf("cat while written: %d bytes", len(got))
			}
			if g.uncached.Load() != unc+1 {
				t.Errorf("an open for reading while the file is open for writing was decided without a scan")
			}
			if reads, _ := seen.take(); tc.passed && len(reads) != 0 {
				t.Errorf("%d READs reached clamfuse for a reader beside a writer in passthrough", len(reads))
			}
			in.Close()
			if err := holder.Wait(); err != nil {
				t.Fatal(err)
			}
			want := int32(1)
			if tc.passed {
				// It wrote nothing, but clamfuse cannot tell.
				want++
				waitFor(t, "the scan after the second writer's close", func() bool { return g.prescans.Load() == want })
			}

			// The infected copy: denied at the next open.
			runOn(t, m, "cp", filepath.Join(tmp, "infected"), f)
			want++
			waitFor(t, "the scan after the third writer's close", func() bool { return g.prescans.Load() == want })
			out, err := hangReported(t, exec.CommandContext(ctx, "cat", f)).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "Permission denied") {
				t.Errorf("cat of the file a writer made infected: %v, %q; want Permission denied", err, out)
			}
		})
	}
}

func mustWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openHandles is the number of handles open of the node of backing file p.
func openHandles(t *testing.T, m *Mounted, p string) int {
	return openCount(t, m, p, func(n *Node) int { return n.handlesLocked().len() })
}

// openWriters is the number of handles open for writing of the node of
// backing file p.
func openWriters(t *testing.T, m *Mounted, p string) int32 {
	return int32(openCount(t, m, p, func(n *Node) int { return int(n.writersLocked()) }))
}

// openCount is count of the node of backing file p, with its hmu held;
// 0 if there is no such node.
func openCount(t *testing.T, m *Mounted, p string, count func(*Node) int) int {
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
	return count(n)
}

// TestPassthroughRefused: on a backing filesystem that stacks (overlayfs)
// the kernel refuses backing files (stack depth); every open falls back
// to clamfuse's READs, logged once at DEBUG for the reason, and mixed
// opens of one file (one refused, then more) all work.
func TestPassthroughRefused(t *testing.T) {
	base := t.TempDir()
	lower, upper, work, ovl := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "ovl")
	for _, d := range []string{lower, upper, work, ovl} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", ovl, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		testenv.Skip(t, "no overlayfs to stack under the mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ovl, unix.MNT_DETACH) })
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	_, m, seen := testMount(t, MountOptions{Source: ovl, Passthrough: true, FS: Options{Logger: log}})
	if !m.Passthrough() {
		t.Fatal("passthrough not granted")
	}
	content := strings.Repeat("clean, on overlayfs\n", 60000) // over passthroughMinRead
	mustWrite(t, filepath.Join(ovl, "f"), []byte(content))
	f := filepath.Join(m.Target, "f")
	seen.take()
	for range 3 {
		if got := runOn(t, m, "cat", f); got != content {
			t.Fatalf("cat: %d bytes, want %d", len(got), len(content))
		}
	}
	// Held open for writing, then read beside it: no EIO from mixing.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "sh", "-c", "exec 3>>"+f+"; exec 4<"+f+"; cat <&4 >/dev/null; cat "+f+" >/dev/null").CombinedOutput(); err != nil {
		t.Fatalf("opens beside a writer: %v %s", err, out)
	}
	if reads, _ := seen.take(); len(reads) == 0 {
		t.Error("no READ reached clamfuse, yet the kernel refuses backing files on overlayfs")
	}
	mu.Lock()
	refused := strings.Count(logs.String(), "passthrough refused")
	mu.Unlock()
	if refused != 1 {
		t.Errorf("%d DEBUG lines about the refused backing files; want one for the one reason:\n%s", refused, logs.String())
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// TestPollAskedOnce: the kernel asks clamfuse about readiness (FUSE_POLL)
// once per mount, not at every poll of every file: bash's `read -t 0`
// selects on the file it redirected, each time a new open.
func TestPollAskedOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		mo   MountOptions
	}{
		{"passthrough", MountOptions{Passthrough: true}},
		{"cached", MountOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backing, m, seen := testMount(t, tc.mo)
			mustWrite(t, filepath.Join(backing, "polled"), []byte("ready\n"))
			seen.takeOps()
			f := filepath.Join(m.Target, "polled")
			runOn(t, m, "bash", "-c", `for i in 1 2 3 4 5; do read -t 0 < "$1" || exit 1; done`, "bash", f)
			ops := seen.takeOps()
			if ops["OpenRequest"] == 0 {
				t.Fatalf("no OPEN reached clamfuse: %v", ops)
			}
			if got := ops["PollRequest"]; got != 1 {
				t.Errorf("%d POLL requests for 5 selects of files open through the mount, want 1: %v", got, ops)
			}
		})
	}
}

// TestScanAfterTheLastWriter: the scan after a write starts when the last
// writer of the file is released, whichever of the writers wrote. The
// RELEASE of a writer that wrote may be served before that of one that
// wrote nothing (both are sent in the background); the scan was then
// never started (TestPassthroughWriters/off timed out waiting for it on a
// loaded machine), and the next open had to scan.
func TestScanAfterTheLastWriter(t *testing.T) {
	g := &countingGate{}
	backing, m, _ := testMount(t, MountOptions{FS: Options{Gate: g}})
	mustWrite(t, filepath.Join(backing, "f"), []byte("old\n"))
	f := filepath.Join(m.Target, "f")
	for i, tc := range []struct{ name, script string }{
		{"the writer that wrote closes first", "exec 3>>" + f + "; exec 4>>" + f + "; echo new >&4; exec 4>&-; exec 3>&-"},
		{"the writer that wrote closes last", "exec 3>>" + f + "; exec 4>>" + f + "; echo new >&4; exec 3>&-; exec 4>&-"},
		{"neither wrote", "exec 3>>" + f + "; exec 4>>" + f + "; exec 4>&-; exec 3>&-; echo again >>" + f},
	} {
		runAs(t, m, 0, tc.script)
		waitFor(t, tc.name+": the scan after the last writer's close", func() bool { return g.prescans.Load() == int32(i+1) })
	}
	if got := g.prescans.Load(); got != 3 {
		t.Errorf("%d scans after a write; want 3, one per script", got)
	}
}
