package cache_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// ownTmpfs mounts a small tmpfs of the test's own and returns its path,
// which any user may reach.
func ownTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0777"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestGateLeaseJudgesFile: a file whose contents the gate verifies is
// handed to clamd itself when nobody can write it (a read lease holds,
// lease.go), and as a private copy (a memfd) when anyone could: open for
// writing, or mapped shared and writable, even with that descriptor
// closed. Either way the open is allowed and the bytes handed over for
// the page cache are the file's.
func TestGateLeaseJudgesFile(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	dir := ownTmpfs(t)
	body := bytes.Repeat([]byte("clean "), 2000)
	for _, tt := range []struct {
		name     string
		writer   func(t *testing.T, p string) // keeps a way to write p until the test ends
		wantCopy bool
	}{
		{"nobody writes", func(*testing.T, string) {}, false},
		{"mapped private, read-only", func(t *testing.T, p string) { mapFile(t, p, unix.O_RDONLY, unix.PROT_READ, unix.MAP_PRIVATE) }, false},
		{"open for writing", func(t *testing.T, p string) {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
		}, true},
		{"mapped shared, descriptor closed", func(t *testing.T, p string) {
			mapFile(t, p, unix.O_RDWR, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(p, body, 0o644); err != nil {
				t.Fatal(err)
			}
			tt.writer(t, p)
			s := &hookScanner{Scanner: realPool(t, c)}
			g := verifyingGate(s)
			d, h := firstOpen(t, g, p)
			if !d.Allow {
				t.Fatalf("clean file: %s; want allowed", d.Reason)
			}
			if !d.Held || !bytes.Equal(h.bufs[len(h.bufs)-1], body) {
				t.Errorf("bytes handed over for the page cache: held %v; want the file's", d.Held)
			}
			names, inodes := s.seen(), s.seenInodes()
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if len(names) != 1 {
				t.Fatalf("clamd was handed %d descriptors (%q); want 1", len(names), names)
			}
			copied := strings.HasPrefix(names[0], "/memfd:")
			if copied != tt.wantCopy || !copied && inodes[0] != st.Ino {
				t.Errorf("clamd was handed %q (inode %d, the file's %d); want a private copy: %v", names[0], inodes[0], st.Ino, tt.wantCopy)
			}
		})
	}
}

// verifyingGate is a Gate over s that verifies the contents of files up
// to 1 MiB (cache/verify.go), as clamfuse's default does.
func verifyingGate(s cache.Scanner) *cache.Gate {
	return cache.NewGate(s, cache.Options{MaxEntries: 16, TTL: time.Hour, Timeout: 60 * time.Second, VerifyMaxSize: 1 << 20})
}

// firstOpen opens p and checks it through g as an open's own scan does,
// its Holder keeping every buffer it gives.
func firstOpen(t *testing.T, g *cache.Gate, p string) (cache.Decision, *holdAll) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &holdAll{}
	return g.Check(t.Context(), f, cache.Opener{Path: filepath.Base(p), Pid: 4242, Uid: 1000, Into: h}), h
}

// mapFile maps p as flags say, with its descriptor closed at once; the
// mapping stays until the test ends.
func mapFile(t *testing.T, p string, mode, prot, flags int) {
	t.Helper()
	fd, err := unix.Open(p, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	mem, err := unix.Mmap(fd, 0, int(st.Size), prot, flags)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
}

// TestGateLeaseBroken: while clamd has the file itself (under a read
// lease), another user (nobody) opens it for writing. Their open goes on
// at once, not after the scan nor after the kernel's lease-break-time
// (45 s): clamfuse gives the lease up on the break's SIGIO. That scan is
// not used, since the file could have changed under it without a trace
// in its size or times (through a shared mapping): with nothing written
// and so nothing to see, it is made again on a private copy (a user
// breaking every lease cannot keep a scan from ending); with EICAR
// written in place, the open is denied and the clean bytes are not
// handed over for the page cache.
func TestGateLeaseBroken(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	dir := ownTmpfs(t)
	eicar := clamdtest.EICAR()
	clean := bytes.Repeat([]byte("c"), len(eicar))
	for _, tt := range []struct {
		name      string
		dd        []string // the other user's dd, its input EICAR
		want      []byte   // the file's contents after it
		wantAllow bool
	}{
		{"opened for writing, nothing written", []string{"count=0"}, clean, true},
		{"EICAR written in place", nil, eicar, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(p, clean, 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o666); err != nil { // whatever the umask
				t.Fatal(err)
			}
			writerDone := make(chan error, 1)
			s := &hookScanner{Scanner: realPool(t, c)}
			s.after = func(call int, _ *os.File) {
				if call != 1 {
					return
				}
				// dd conv=notrunc: opened for writing, not truncated.
				cmd := exec.Command("dd", append([]string{"of=" + p, "conv=notrunc", "status=none"}, tt.dd...)...)
				cmd.Stdin = bytes.NewReader(eicar)
				start := time.Now()
				err := asNobody(cmd)
				if err == nil && time.Since(start) > 10*time.Second {
					err = errSlowWriter(time.Since(start))
				}
				writerDone <- err
			}
			g := verifyingGate(s)
			d, h := firstOpen(t, g, p)
			select {
			case err := <-writerDone:
				if err != nil {
					t.Fatalf("the other user's write during the scan: %v", err)
				}
			default:
				t.Fatal("the scan's hook did not run the other user's write")
			}
			if got, _ := os.ReadFile(p); !bytes.Equal(got, tt.want) {
				t.Fatalf("the file holds %q after the other user's dd; want %q", got, tt.want)
			}
			names := s.seen()
			if len(names) < 2 || strings.HasPrefix(names[0], "/memfd:") {
				t.Fatalf("clamd was handed %q; want the file under a lease, then a scan again", names)
			}
			if tt.wantAllow && (len(names) != 2 || !strings.HasPrefix(names[1], "/memfd:")) {
				t.Errorf("clamd was handed %q; want the file, then, its lease broken with no trace in the key, a private copy", names)
			}
			if d.Allow != tt.wantAllow {
				t.Errorf("the open whose scan's lease was broken: %s, allowed %v; want %v", d.Reason, d.Allow, tt.wantAllow)
			}
			if d.Held && !bytes.Equal(h.bufs[len(h.bufs)-1], tt.want) {
				t.Errorf("bytes handed over for the page cache: %q; want the file's now", h.bufs[len(h.bufs)-1])
			}
		})
	}
}

type errSlowWriter time.Duration

func (e errSlowWriter) Error() string {
	return "its open for writing waited " + time.Duration(e).String() + ": the lease was not given up on the break"
}
