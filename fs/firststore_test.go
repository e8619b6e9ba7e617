package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// storeGate is a Gate whose opens' own scans can be raced: before is run
// when the scan asks for the buffer of the contents it judged (after
// clamd's verdict, before the check of the contents after the scan),
// after once the open is decided, before the filesystem stores the
// bytes judged; each with who opens.
type storeGate struct {
	Gate
	mu            sync.Mutex
	before, after func(who cache.Opener)
}

func (g *storeGate) wrap(real Gate) { g.Gate = real }

func (g *storeGate) hooks() (before, after func(cache.Opener)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.before, g.after
}

func (g *storeGate) Check(ctx context.Context, f *os.File, who cache.Opener) cache.Decision {
	before, after := g.hooks()
	if before != nil && who.Into != nil {
		who.Into = holdHook{who.Into, func() { before(who) }}
	}
	d := g.Gate.Check(ctx, f, who)
	if after != nil {
		after(who)
	}
	return d
}

type holdHook struct {
	cache.Holder
	hook func()
}

func (h holdHook) Hold(size int64) []byte {
	h.hook()
	return h.Holder.Hold(size)
}

// TestFirstOpenStored: the first open of a small file is judged by its
// own scan, which hands over the bytes it judged: they are stored in the
// kernel's page cache before the open is answered (FOPEN_KEEP_CACHE), and
// the reader reads them with no READ; so does the next open of the same
// state. With passthrough and without, with invalidation and without;
// sizes that end inside a page too. A file changed behind the mount after
// its first open (rewritten, truncated, grown, made infected) is read as
// it is now by the next open, or denied: never the bytes stored.
func TestFirstOpenStored(t *testing.T) {
	const size = 10000 // ends inside a page
	clean := []byte(strings.Repeat("first open, judged and stored\n", size/30+1)[:size])
	other := []byte(strings.Repeat("FIRST OPEN, CHANGED BEHIND IT\n", size/30+1)[:size])
	for _, mode := range []struct {
		name string
		mo   MountOptions
	}{
		{"passthrough", MountOptions{Passthrough: true, FS: Options{Invalidation: true}}},
		{"passthrough off", MountOptions{FS: Options{Invalidation: true}}},
		{"passthrough and invalidation off", MountOptions{}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			mo := mode.mo
			mo.FS.AttrValid, mo.FS.EntryValid, mo.FS.WatchedValid = time.Second, time.Second, time.Hour
			backing, m, seen := testMountGate(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: 1 << 20})
			for i, tc := range []struct {
				name  string
				after func(t *testing.T, b string) // a change behind the mount once stored
				want  []byte                       // nil: Permission denied
			}{
				{"unchanged", nil, clean},
				{"rewritten, same size", func(t *testing.T, b string) { mustWrite(t, b, other) }, other},
				{"truncated", func(t *testing.T, b string) { mustDo(t, os.Truncate(b, 100)) }, clean[:100]},
				{"grown", func(t *testing.T, b string) {
					f, err := os.OpenFile(b, os.O_WRONLY|os.O_APPEND, 0)
					mustDo(t, err)
					_, err = f.Write(other)
					mustDo(t, err)
					mustDo(t, f.Close())
				}, append(append([]byte{}, clean...), other...)},
				{"infected", func(t *testing.T, b string) { mustWrite(t, b, clamdtest.EICAR()) }, nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					name := fmt.Sprintf("f%d", i)
					b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
					mustWrite(t, b, clean)
					pinInode(t, f)
					id := nodeID(t, m, b)
					for round := range 2 {
						seen.take()
						seen.takeOps()
						got, err := readThrough(t, m, f)
						if err != nil || string(got) != string(clean) {
							t.Fatalf("cat %d: %v, %d bytes %q...; want the %d bytes judged", round, err, len(got), head(got), len(clean))
						}
						if ops := seen.nodeOps(id); ops["ReadRequest"] != 0 {
							t.Errorf("cat %d made %v; want no READ (the page cache stocked at the open)", round, ops)
						}
						waitFor(t, "the cat's release", func() bool { return openHandles(t, m, b) == 0 })
					}
					if tc.after == nil {
						return
					}
					tc.after(t, b)
					// Where nothing is watched, the kernel trusts the old
					// size until attr_timeout.
					waitFor(t, "the change seen", func() bool {
						got, err := readThrough(t, m, f)
						if tc.want == nil {
							if err == nil || !strings.Contains(string(got), "Permission denied") {
								if strings.Contains(string(got), "EICAR") {
									t.Fatalf("cat served the infected bytes")
								}
								return false
							}
							return true
						}
						if err != nil {
							t.Fatalf("cat after the change: %v, %s", err, got)
						}
						if string(got) != string(tc.want) && string(got) != string(clean) &&
							!(len(got) <= len(clean) && string(got) == string(tc.want[:len(got)])) {
							t.Fatalf("cat after the change: %d bytes %q...; want the %d bytes now in the file", len(got), head(got), len(tc.want))
						}
						return string(got) == string(tc.want)
					})
				})
			}
			noneHeld(t, m)
		})
	}
}

// noneHeld: every buffer of judged contents was given back (Hold).
func noneHeld(t *testing.T, m *Mounted) {
	t.Helper()
	if n := len(m.fsys.holding); n != 0 {
		t.Errorf("%d buffers of judged contents still held after the opens", n)
	}
}

// TestFirstOpenStoreRaced: a hostile user swaps infected bytes of the same
// size into a small file while another user's first open of it is
// judged: after clamd's verdict on the clean bytes and before the check
// of the contents after the scan (the bytes handed over for the store),
// or once the open is decided and before its store (with the file's
// times put back, or through a shared mapping). The reader gets the
// clean bytes its open judged (swapped before the store), or is denied
// (swapped before the check: judged again); never the infected ones; and
// the next open is denied.
func TestFirstOpenStoreRaced(t *testing.T) {
	const reader = 64012
	eicar := clamdtest.EICAR()
	clean := []byte(strings.Repeat("c", len(eicar)))
	swaps := []struct {
		name string
		do   func(t *testing.T, b string)
	}{
		{"a write, times put back", func(t *testing.T, b string) {
			var st unix.Stat_t
			mustDo(t, unix.Stat(b, &st))
			fd, err := unix.Open(b, unix.O_WRONLY|unix.O_CLOEXEC, 0)
			mustDo(t, err)
			_, err = unix.Pwrite(fd, eicar, 0)
			unix.Close(fd)
			mustDo(t, err)
			mustDo(t, unix.UtimesNano(b, []unix.Timespec{st.Atim, st.Mtim}))
		}},
		{"a shared mapping", func(t *testing.T, b string) { mapWrite(t, b, eicar) }},
	}
	for _, mode := range sharedModes {
		t.Run(mode.name, func(t *testing.T) {
			g := &storeGate{}
			mo := mode.mo
			mo.FS.Gate = g
			backing, m, _ := mountShared(t, mo)
			for _, swap := range swaps {
				for _, when := range []string{"before the check after the scan", "before the store"} {
					t.Run(swap.name+"/"+when, func(t *testing.T) {
						for round := range 3 {
							name := fmt.Sprintf("f-%s-%s-%d", strings.ReplaceAll(swap.name, " ", "_"), strings.ReplaceAll(when, " ", "_"), round)
							b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
							mustWrite(t, b, clean)
							var once sync.Once
							hook := func(who cache.Opener) {
								if who.Path == name {
									once.Do(func() { swap.do(t, b) })
								}
							}
							g.mu.Lock()
							if when == "before the store" {
								g.before, g.after = nil, hook
							} else {
								g.before, g.after = hook, nil
							}
							g.mu.Unlock()
							got, err := readAs(t, m, reader, "cat "+f)
							g.mu.Lock()
							g.before, g.after = nil, nil
							g.mu.Unlock()
							if strings.Contains(got, "EICAR") {
								t.Fatalf("round %d: the first open read the infected bytes", round)
							}
							if when == "before the store" {
								// Judged clean, its bytes handed over: the
								// reader reads those.
								if err != nil || got != string(clean) {
									t.Fatalf("round %d: the first open: %v, %q; want the clean bytes judged", round, err, got)
								}
							} else if err == nil || !strings.Contains(got, "Permission denied") {
								// The check after the scan sees the change:
								// judged again, infected.
								t.Fatalf("round %d: the first open: %v, %q; want Permission denied", round, err, got)
							}
							if got, err := readAs(t, m, reader, "cat "+f); err == nil || !strings.Contains(got, "Permission denied") {
								t.Fatalf("round %d: the next open: %v, %q; want Permission denied", round, err, got)
							}
						}
					})
				}
			}
			noneHeld(t, m)
		})
	}
}

// TestFirstOpenTogether: several users' first opens of the same small
// file at once (one scan, which one of them leads) all read the bytes
// judged; and, while one of them holds the file open, a writer through
// the mount and readers beside it read and write as without the store.
func TestFirstOpenTogether(t *testing.T) {
	clean := []byte(strings.Repeat("read together\n", 1000))
	for _, mode := range sharedModes {
		t.Run(mode.name, func(t *testing.T) {
			mo := mode.mo
			backing, m, _ := mountShared(t, mo)
			for round := range 5 {
				name := fmt.Sprintf("f%d", round)
				b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
				mustWrite(t, b, clean)
				mustDo(t, os.Chmod(b, 0o666))
				var wg sync.WaitGroup
				errs := make(chan error, 4)
				for uid := range uint32(4) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						got, err := readAs(t, m, 64010+uid, "cat "+f)
						if err != nil || got != string(clean) {
							errs <- fmt.Errorf("user %d: %v, %d bytes %q", 64010+uid, err, len(got), head([]byte(got)))
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("round %d: %v", round, err)
				}
				// A writer while a reader holds it open, then a reader.
				cmd := exec.Command("sh", "-c", "exec 3<"+f+"; read x; exit 0")
				in, err := cmd.StdinPipe()
				mustDo(t, err)
				mustDo(t, cmd.Start())
				waitFor(t, "the file open", func() bool { return openHandles(t, m, b) == 1 })
				runAs(t, m, 64010, "exec 3<>"+f+"; printf 'WRITTEN' >&3; exec 3>&-")
				in.Close()
				mustDo(t, cmd.Wait())
				want := "WRITTEN" + string(clean[7:])
				if got, err := readAs(t, m, 64011, "cat "+f); err != nil || got != want {
					t.Fatalf("round %d: read after the write: %v, %q...; want %q...", round, err, head([]byte(got)), head([]byte(want)))
				}
			}
		})
	}
}

// TestFirstOpenStoreOpenerKilled: the opener of a small file is killed
// once its open is decided, before the bytes judged are stored and the
// open answered. The next user's open reads those bytes, with no READ,
// and once infected bytes are swapped in behind the mount (times put
// back), the open after is denied.
func TestFirstOpenStoreOpenerKilled(t *testing.T) {
	const reader = 64012
	eicar := clamdtest.EICAR()
	clean := []byte(strings.Repeat("k", len(eicar)))
	g := &storeGate{}
	mo := MountOptions{AllowOther: true, Passthrough: true}
	mo.FS = Options{Gate: g, AttrValid: time.Second, EntryValid: time.Second, Invalidation: true, WatchedValid: time.Hour}
	backing, m, seen := testMountGate(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
		Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	openToAll(t, backing, m)
	for round := range 3 {
		name := fmt.Sprintf("f%d", round)
		b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
		mustWrite(t, b, clean)
		pinInode(t, f)
		g.mu.Lock()
		g.after = func(who cache.Opener) {
			if who.Path == name {
				unix.Kill(int(who.Pid), unix.SIGKILL)
			}
		}
		g.mu.Unlock()
		if got, err := readAs(t, m, reader, "exec cat "+f); err == nil {
			t.Fatalf("round %d: the opener killed at its open read %q", round, got)
		}
		g.mu.Lock()
		g.after = nil
		g.mu.Unlock()
		waitFor(t, "the killed open released", func() bool { return openHandles(t, m, b) == 0 })
		seen.takeOps()
		if got, err := readAs(t, m, reader, "cat "+f); err != nil || got != string(clean) {
			t.Fatalf("round %d: the next open: %v, %q; want the clean bytes", round, err, got)
		}
		if ops := seen.nodeOps(nodeID(t, m, b)); ops["ReadRequest"] != 0 {
			t.Errorf("round %d: the next open made %v; want no READ (the bytes stored at the killed open kept)", round, ops)
		}
		var st unix.Stat_t
		mustDo(t, unix.Stat(b, &st))
		fd, err := unix.Open(b, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		mustDo(t, err)
		_, err = unix.Pwrite(fd, eicar, 0)
		unix.Close(fd)
		mustDo(t, err)
		mustDo(t, unix.UtimesNano(b, []unix.Timespec{st.Atim, st.Mtim}))
		if got, err := readAs(t, m, reader, "cat "+f); err == nil || !strings.Contains(got, "Permission denied") {
			t.Fatalf("round %d: the open after the swap: %v, %q; want Permission denied", round, err, got)
		}
	}
	noneHeld(t, m)
}

// TestFirstOpenHoldsBounded: a hostile user's first opens of small files
// of their own, each held undecided once its scan has handed over the
// bytes it judged (as a slow reply or a stalled opener would), take at
// most holdMax buffers of judged contents between them, however many
// there are; meanwhile another user's first open neither fails nor
// waits for them: it reads the bytes judged (with a READ, no buffer being
// left for its store). Once let go, the hostile opens read their bytes
// too, and every buffer is given back.
func TestFirstOpenHoldsBounded(t *testing.T) {
	const hostile, victim = 64013, 64014
	g := &storeGate{}
	mo := MountOptions{AllowOther: true}
	mo.FS = Options{Gate: g, AttrValid: time.Second, EntryValid: time.Second}
	backing, m, seen := testMountGate(t, mo, cache.Options{MaxEntries: 1000, TTL: time.Hour,
		Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	openToAll(t, backing, m)
	clean := []byte(strings.Repeat("held, undecided\n", 4000))
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	defer letGo()
	var mu sync.Mutex
	parked := 0
	g.mu.Lock()
	g.after = func(who cache.Opener) {
		if who.Uid != hostile {
			return
		}
		mu.Lock()
		parked++
		mu.Unlock()
		<-release
	}
	g.mu.Unlock()
	const opens = holdMax + 4
	var wg sync.WaitGroup
	errs := make(chan error, opens)
	for i := range opens {
		b, f := filepath.Join(backing, fmt.Sprintf("h%d", i)), filepath.Join(m.Target, fmt.Sprintf("h%d", i))
		mustWrite(t, b, clean)
		mustDo(t, os.Chmod(b, 0o644))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := readAs(t, m, hostile, "cat "+f); err != nil || got != string(clean) {
				errs <- fmt.Errorf("hostile open %d: %v, %d bytes %q", i, err, len(got), head([]byte(got)))
			}
		}()
	}
	waitFor(t, "every hostile open decided and held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return parked == opens
	})
	if n := len(m.fsys.holding); n != holdMax {
		t.Errorf("%d buffers of judged contents held by %d opens undecided; want holdMax, %d", n, opens, holdMax)
	}
	b, f := filepath.Join(backing, "victim"), filepath.Join(m.Target, "victim")
	mustWrite(t, b, clean)
	mustDo(t, os.Chmod(b, 0o644))
	seen.takeOps()
	start := time.Now()
	if got, err := readAs(t, m, victim, "cat "+f); err != nil || got != string(clean) {
		t.Fatalf("another user's first open while the buffers are held: %v, %d bytes %q", err, len(got), head([]byte(got)))
	}
	t.Logf("the other user's first open read its file in %v", time.Since(start).Round(time.Microsecond))
	if ops := seen.nodeOps(nodeID(t, m, b)); ops["ReadRequest"] == 0 {
		t.Errorf("the other user's read made %v: a READ expected, no buffer being left for a store", ops)
	}
	letGo()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "every handle released", func() bool { return openHandles(t, m, b) == 0 })
	noneHeld(t, m)
}

// TestFirstOpenStoreLinked: a file with two names (hard links) is one
// node, with one page cache. A first open through one name stores the
// bytes judged, and an open of the same state through the other keeps
// them (no READ); once a hostile user swaps infected bytes in behind the
// mount (times put back), opens through either name are denied, never
// served the bytes stored. First opens through both names at once, one
// of them for reading and writing, read the clean bytes.
func TestFirstOpenStoreLinked(t *testing.T) {
	const reader, other = 64012, 64013
	eicar := clamdtest.EICAR()
	clean := []byte(strings.Repeat("l", len(eicar)))
	for _, mode := range sharedModes {
		t.Run(mode.name, func(t *testing.T) {
			mo := mode.mo
			backing, m, seen := mountShared(t, mo)
			for round := range 3 {
				a, b := fmt.Sprintf("a%d", round), fmt.Sprintf("b%d", round)
				ba, bb := filepath.Join(backing, a), filepath.Join(backing, b)
				fa, fb := filepath.Join(m.Target, a), filepath.Join(m.Target, b)
				mustWrite(t, ba, clean)
				mustDo(t, os.Chmod(ba, 0o666))
				mustDo(t, os.Link(ba, bb))
				for _, f := range []string{fa, fb} {
					pinInode(t, f)
				}
				id := nodeID(t, m, ba)
				for i, f := range []string{fa, fb} {
					seen.takeOps()
					if got, err := readAs(t, m, reader, "cat "+f); err != nil || got != string(clean) {
						t.Fatalf("round %d: open %d: %v, %q; want the clean bytes", round, i, err, got)
					}
					if ops := seen.nodeOps(id); ops["ReadRequest"] != 0 {
						t.Errorf("round %d: open %d made %v; want no READ (stored, then kept)", round, i, ops)
					}
					waitFor(t, "the cat's release", func() bool { return openHandles(t, m, ba) == 0 })
				}
				var st unix.Stat_t
				mustDo(t, unix.Stat(ba, &st))
				fd, err := unix.Open(bb, unix.O_WRONLY|unix.O_CLOEXEC, 0)
				mustDo(t, err)
				_, err = unix.Pwrite(fd, eicar, 0)
				unix.Close(fd)
				mustDo(t, err)
				mustDo(t, unix.UtimesNano(ba, []unix.Timespec{st.Atim, st.Mtim}))
				for _, f := range []string{fb, fa} {
					got, err := readAs(t, m, reader, "cat "+f)
					if strings.Contains(got, "EICAR") {
						t.Fatalf("round %d: %s served the infected bytes swapped in", round, f)
					}
					if err == nil || !strings.Contains(got, "Permission denied") {
						t.Fatalf("round %d: %s after the swap: %v, %q; want Permission denied", round, f, err, got)
					}
				}

				// Both names' first opens at once, one for reading and
				// writing (which writes nothing).
				c, d := fmt.Sprintf("c%d", round), fmt.Sprintf("d%d", round)
				bc := filepath.Join(backing, c)
				mustWrite(t, bc, clean)
				mustDo(t, os.Chmod(bc, 0o666))
				mustDo(t, os.Link(bc, filepath.Join(backing, d)))
				var wg sync.WaitGroup
				errs := make(chan error, 2)
				for _, r := range []struct {
					uid    uint32
					script string
				}{
					{reader, "cat " + filepath.Join(m.Target, c)},
					{other, "exec 3<>" + filepath.Join(m.Target, d) + "; cat <&3"},
				} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if got, err := readAs(t, m, r.uid, r.script); err != nil || got != string(clean) {
							errs <- fmt.Errorf("%s: %v, %q", r.script, err, got)
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("round %d: at once: %v", round, err)
				}
			}
			noneHeld(t, m)
		})
	}
}

// TestFirstOpenStoreSizes: first opens of files of the sizes at the
// store's edges (empty, one byte, a page and a byte either side, the
// gate's verify_max_size and a byte either side, passthroughMinRead and
// a byte under) read exactly the file's bytes; those the store covers
// (verified, under passthroughMinRead) with no READ, the others through
// READs; and no buffer is left held.
func TestFirstOpenStoreSizes(t *testing.T) {
	const verifyMax = 5*4096 + 7
	for _, tc := range []struct {
		verifyMax int64
		sizes     []int
	}{
		{verifyMax, []int{0, 1, 4095, 4096, 4097, verifyMax - 1, verifyMax, verifyMax + 1}},
		{2 * passthroughMinRead, []int{passthroughMinRead - 1, passthroughMinRead}},
	} {
		t.Run(fmt.Sprint(tc.verifyMax), func(t *testing.T) {
			mo := MountOptions{FS: Options{AttrValid: time.Second, EntryValid: time.Second}}
			backing, m, seen := testMountGate(t, mo, cache.Options{MaxEntries: 100, TTL: time.Hour,
				Timeout: time.Minute, VerifyMaxSize: tc.verifyMax})
			for _, size := range tc.sizes {
				data := make([]byte, size)
				x := uint32(size) | 1
				for i := range data {
					x ^= x << 13
					x ^= x >> 17
					x ^= x << 5
					data[i] = 'a' + byte(x%26)
				}
				name := fmt.Sprintf("s%d", size)
				b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
				mustWrite(t, b, data)
				pinInode(t, f)
				id := nodeID(t, m, b)
				seen.takeOps()
				got, err := readThrough(t, m, f)
				if err != nil || string(got) != string(data) {
					t.Fatalf("size %d: cat: %v, %d bytes; want the file's %d", size, err, len(got), size)
				}
				stored := size > 0 && int64(size) <= tc.verifyMax && size < passthroughMinRead
				reads := seen.nodeOps(id)["ReadRequest"]
				if stored && reads != 0 {
					t.Errorf("size %d: %d READs; want none (stored at the open)", size, reads)
				}
				if !stored && size > 0 && reads == 0 {
					t.Errorf("size %d: no READ, but nothing was to be stored", size)
				}
				waitFor(t, "the cat's release", func() bool { return openHandles(t, m, b) == 0 })
			}
			noneHeld(t, m)
		})
	}
}

// TestFirstOpenUndoneUnderScan: a hostile user holds a small file mapped
// shared behind the mount and flips its bytes between infected and clean
// at about the pace of a scan (the page stays dirty: no trace in the file's size
// or times), while opens through the mount are judged; then they leave
// the infected bytes in. However the flips fell against the scans (clean
// bytes only while clamd read the file: TestGateUndoneUnderScan makes
// that timing exact), no verdict is left cached, nor any page cached,
// that lets the next open read the infected bytes: it is denied.
func TestFirstOpenUndoneUnderScan(t *testing.T) {
	const reader = 64012
	eicar := clamdtest.EICAR()
	clean := []byte(strings.Repeat("u", len(eicar)))
	mo := MountOptions{AllowOther: true, FS: Options{AttrValid: time.Second, EntryValid: time.Second}}
	backing, m, _ := testMountGate(t, mo, cache.Options{MaxEntries: 1000, TTL: time.Hour,
		Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	openToAll(t, backing, m)
	for round := range 3 {
		name := fmt.Sprintf("f%d", round)
		b, f := filepath.Join(backing, name), filepath.Join(m.Target, name)
		mustWrite(t, b, eicar)
		mustDo(t, os.Chmod(b, 0o644))
		fd, err := unix.Open(b, unix.O_RDWR|unix.O_CLOEXEC, 0)
		mustDo(t, err)
		mem, err := unix.Mmap(fd, 0, len(eicar), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		mustDo(t, err)
		copy(mem, eicar)
		stop := make(chan struct{})
		var flipping sync.WaitGroup
		flipping.Add(1)
		go func() {
			defer flipping.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					copy(mem, eicar)
					return
				default:
				}
				// Mostly infected, clean for a scan's length now and
				// then: a first try at clamd's timing.
				copy(mem, eicar)
				spin(time.Duration(200+i%7*100) * time.Microsecond)
				copy(mem, clean)
				spin(time.Duration(100+i%5*100) * time.Microsecond)
			}
		}()
		// The opens while the bytes flip; what they read is the file's
		// as it is at each read (the open was judged), not checked here.
		for range 40 {
			readAs(t, m, reader, "cat "+f+" >/dev/null")
		}
		close(stop)
		flipping.Wait()
		mustDo(t, unix.Munmap(mem))
		unix.Close(fd)
		got, err := readAs(t, m, reader, "cat "+f)
		if strings.Contains(got, "EICAR") {
			t.Fatalf("round %d: the open after the flips read the infected bytes", round)
		}
		if err == nil || !strings.Contains(got, "Permission denied") {
			t.Fatalf("round %d: the open after the flips: %v, %q; want Permission denied", round, err, got)
		}
	}
	noneHeld(t, m)
}

// spin waits d without sleeping (a sleep's wake-up is far coarser).
func spin(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

// sharedModes are the two shared mounts most store tests run on: FUSE
// passthrough with invalidation, and neither.
var sharedModes = []struct {
	name string
	mo   MountOptions
}{
	{"passthrough", MountOptions{Passthrough: true, FS: Options{Invalidation: true}}},
	{"off", MountOptions{}},
}

// mountShared mounts mo for several users (allow_other; the backing
// directory, the mountpoint and its parent open to all), names and
// attributes trusted 1 s (1 h where watched), contents verified up to
// 1 MiB, and returns what testMountGate returns.
func mountShared(t *testing.T, mo MountOptions) (string, *Mounted, *requests) {
	t.Helper()
	mo.AllowOther = true
	mo.FS.AttrValid, mo.FS.EntryValid, mo.FS.WatchedValid = time.Second, time.Second, time.Hour
	backing, m, seen := testMountGate(t, mo, cache.Options{MaxEntries: 1000, TTL: time.Hour,
		Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	openToAll(t, backing, m)
	return backing, m, seen
}

// pinInode holds p's inode with an O_PATH descriptor until the test
// ends: the kernel keeps the inode, and its page cache, whatever
// drop_caches other processes run.
func pinInode(t *testing.T, p string) {
	t.Helper()
	pin, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	mustDo(t, err)
	t.Cleanup(func() { unix.Close(pin) })
}
