package test

// Helpers shared by the end-to-end tests of this package: one of each.
// Mount-side helpers (starting clamfuse, the mount table, aborting a hung
// mount) live in test/mounttest; the skip rule in test/testenv.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/mounttest"
)

// mustDo fails t at once if err is not nil.
func mustDo(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pseudoRandom returns n reproducible pseudo-random bytes (ChaCha8 seeded
// with seed): they carry no signature of the test database.
func pseudoRandom(n int, seed uint64) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

// eventually polls cond every 10 ms until it holds, and fails t if it
// does not within d: for conditions that come true a moment after the
// event that causes them (a log line, a count, a cache expiring).
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mountTmpfs mounts a tmpfs with the given options on a new directory
// and unmounts it at cleanup, after anything registered later (such as a
// clamfuse mount on top of it).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	mustDo(t, os.Mkdir(dir, 0o755))
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		}
	})
	return dir
}

// errnoName names an errno ("EACCES"), "ok" for nil, or the message.
func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno %d", int(e))
	}
	return err.Error()
}

// describeBytes shows short contents verbatim, long ones by length and
// hash.
func describeBytes(b []byte) string {
	if len(b) <= 64 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%d bytes sha256:%x", len(b), sha256.Sum256(b))
}

// lineDiff shows the lines of got that differ from want, side by side.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  native: %s\n  mount:  %s\n", i+1, a, c)
		}
	}
	return b.String()
}

func openClose(p string, flags int, mode uint32) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func putFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func slurp(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lstatT(t testing.TB, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// readVia reads p through the mount m, failing t if the read errs or
// takes longer than scanBound (the connection is then aborted).
func readVia(t testing.TB, m *mounttest.Mount, p string) []byte {
	t.Helper()
	var b []byte
	var err error
	m.Within(t, scanBound, "read "+p, func() { b, err = os.ReadFile(p) })
	if err != nil {
		t.Fatalf("read through the mount: %v", err)
	}
	return b
}

// readDirect is readVia for callers already inside Mount.Within.
func readDirect(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read through the mount: %v", err)
	}
	return b
}

// wantEACCES checks that opening p for reading through m fails with
// EACCES, within scanBound.
func wantEACCES(t testing.TB, m *mounttest.Mount, p string) {
	t.Helper()
	wantEACCESFlags(t, m, p, os.O_RDONLY)
}

func wantEACCESFlags(t testing.TB, m *mounttest.Mount, p string, flag int) {
	t.Helper()
	var err error
	m.Within(t, scanBound, "open "+p, func() {
		var f *os.File
		if f, err = os.OpenFile(p, flag, 0); err == nil {
			f.Close()
		}
	})
	if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("open %s (flags %#x): %v; want EACCES", p, flag, err)
	}
}

// wantSame compares contents by length and sha256, so that a mismatch
// of megabytes prints one line.
func wantSame(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	short := func(b []byte) string {
		if len(b) <= 64 {
			return fmt.Sprintf("%q", b)
		}
		return fmt.Sprintf("%d bytes sha256 %x", len(b), sha256.Sum256(b))
	}
	t.Fatalf("%s: got %s, want %s", what, short(got), short(want))
}

func wantNoEntry(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: %v; want it gone", p, err)
	}
}

// wantStatMirrors compares what stat shows through the mount with the
// backing file: type and mode, size, owner, mtime to the nanosecond, and
// link count.
func wantStatMirrors(t testing.TB, mnt, back string) {
	t.Helper()
	a, b := lstatT(t, mnt), lstatT(t, back)
	type attrs struct {
		Mode     uint32
		Size     int64
		Uid, Gid uint32
		Mtime    int64
		Nlink    uint64
	}
	ga := attrs{a.Mode, a.Size, a.Uid, a.Gid, a.Mtim.Nano(), uint64(a.Nlink)}
	gb := attrs{b.Mode, b.Size, b.Uid, b.Gid, b.Mtim.Nano(), uint64(b.Nlink)}
	if ga != gb {
		t.Errorf("stat %s through the mount %+v, backing %+v", filepath.Base(mnt), ga, gb)
	}
}

func xattrGet(t testing.TB, p, name string) []byte {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", p, name, err)
	}
	return buf[:n]
}

// listxattr returns the user.* names on p, sorted.
func xattrUserList(t testing.TB, p string) []string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if strings.HasPrefix(s, "user.") {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// linesContaining counts the lines of file p that contain substr.
func linesContaining(t testing.TB, p, substr string) int {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}

// traversableByAll makes dir and its parents up to the temporary directory
// searchable by every user (t.TempDir makes them 0700), so that processes
// of other users can reach a mount inside.
func traversableByAll(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for p := filepath.Clean(dir); p != tmp && p != "/" && strings.HasPrefix(p, tmp+"/"); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// mountOptions returns the options of the mount at p.
func mountOptions(t *testing.T, p string) string {
	t.Helper()
	on := mounttest.MountsOn(t, p)
	if len(on) == 0 {
		t.Fatalf("%s not in mountinfo", p)
	}
	return on[len(on)-1].Options
}

// Names kept so that branches written before the helpers were merged
// still build; new code uses what each forwards to. (The race check
// startMount and startChecked added is in mounttest's teardown, for every
// mount.)
var (
	startMount   = mounttest.Start
	startChecked = mounttest.Start
	mustOK       = mustDo
	pseudoBytes  = pseudoRandom
	opsPut       = putFile
)

func opsTmpfs(t *testing.T) string { t.Helper(); return mountTmpfs(t, "size=4m,mode=0700") }

func opsEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventually(t, opsBound, what, cond)
}

// waitNoRequests waits until the kernel has no request of m's connection
// waiting for clamfuse's answer (fusectl's waiting count).
func waitNoRequests(t testing.TB, m *mounttest.Mount) {
	t.Helper()
	deadline := time.Now().Add(logBound)
	for m.Waiting() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still waiting for clamfuse after %v", m.Waiting(), logBound)
		}
		time.Sleep(time.Millisecond)
	}
}

// every runs f every d until stop is closed: the background chores of the
// racing tests (releasing parked readers, an occasional writer).
func every(stop <-chan struct{}, d time.Duration, f func()) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(d):
			f()
		}
	}
}
