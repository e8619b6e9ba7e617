package cache_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
	"github.com/clamfuse/clamfuse/clamav"
	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// Attacks on the read leases (lease.go) that the kernel does not see as
// writes, or that break many leases at once.

// hookScanner runs before, when set, with the descriptor clamd is about
// to be handed, and after once clamd judged it; call counts ScanFile.
// It records each descriptor's name (/proc/self/fd) and inode.
type hookScanner struct {
	cache.Scanner
	mu            sync.Mutex
	calls         int
	names         []string
	inodes        []uint64
	before, after func(call int, f *os.File)
}

func (s *hookScanner) ScanFile(ctx context.Context, f *os.File, size int64) (clamav.Result, error) {
	name, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	var st unix.Stat_t
	unix.Fstat(int(f.Fd()), &st)
	s.mu.Lock()
	s.calls++
	call := s.calls
	s.names = append(s.names, name)
	s.inodes = append(s.inodes, st.Ino)
	s.mu.Unlock()
	if s.before != nil {
		s.before(call, f)
	}
	res, err := s.Scanner.ScanFile(ctx, f, size)
	if s.after != nil {
		s.after(call, f)
	}
	return res, err
}

func (s *hookScanner) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.names...)
}

// seenInodes are the inodes of the descriptors clamd was handed.
func (s *hookScanner) seenInodes() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.inodes...)
}

// asNobody runs cmd as uid and gid 65534 and returns its error, with its
// output.
func asNobody(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// truncRdonly returns a function by which nobody opens a path with
// O_RDONLY|O_TRUNC (a copy of this test binary nobody may run, see
// TestMain), which empties the file without opening it for writing.
func truncRdonly(t *testing.T) func(p string) error {
	t.Helper()
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "trunc")
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return func(p string) error {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "CLAMFUSE_TEST_TRUNC_RDONLY="+p)
		return asNobody(cmd)
	}
}

// ddNobody: nobody writes data over p in place (conv=notrunc), which
// opens it for writing.
func ddNobody(p string, data []byte) error {
	cmd := exec.Command("dd", "of="+p, "conv=notrunc", "status=none")
	cmd.Stdin = bytes.NewReader(data)
	return asNobody(cmd)
}

// leasesHeld lists the lines of /proc/locks of the leases this process
// holds.
func leasesHeld(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pid := strconv.Itoa(os.Getpid())
	var held []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		fields := strings.Fields(sc.Text())
		// "1: LEASE  ACTIVE    READ 1234 00:2d:56 0 EOF"; a break pending
		// shows "BREAKING" and its pid one field further.
		if len(fields) > 1 && fields[1] == "LEASE" && slices.Contains(fields, pid) {
			held = append(held, sc.Text())
		}
	}
	return held
}

// noLeasesLeft waits until this process holds no lease (scans passed on
// may still be ending), failing after a while.
func noLeasesLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		held := leasesHeld(t)
		if len(held) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases still held with every scan over: %q", held)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGateLeaseReadOnlyTruncate: open(2) with O_RDONLY|O_TRUNC empties a
// file its caller may write without opening it for writing, and the
// kernel does not break read leases for it (Linux 6.18 does not): a
// hostile user who may write the file empties it while clamd reads it
// under the lease. The digest is of the bytes before, clamd judges none.
// That verdict must serve neither as one of those bytes, nor hand them
// over for the page cache: the size is in the key, and putting bytes
// back needs an open for writing, which does break the lease.
func TestGateLeaseReadOnlyTruncate(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	dir := ownTmpfs(t)
	eicar := clamdtest.EICAR()
	truncRdonly := truncRdonly(t)
	for _, tt := range []struct {
		name string
		// before: while clamd is about to read; after: once it has.
		before, after func(p string) error
		want          []byte // the file's contents at the end
	}{
		{"emptied before clamd reads, EICAR put back after",
			truncRdonly, func(p string) error { return ddNobody(p, eicar) }, eicar},
		{"emptied before clamd reads", truncRdonly, nil, nil},
		{"emptied after clamd read it", nil, truncRdonly, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := os.WriteFile(p, eicar, 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0o666); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var errs []error
			run := func(f func(string) error) {
				if f != nil {
					if err := f(p); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}
			s := &hookScanner{Scanner: realPool(t, c)}
			s.before = func(call int, f *os.File) {
				if call != 1 {
					return
				}
				run(tt.before)
				if tt.before != nil {
					lt, err := unix.FcntlInt(f.Fd(), unix.F_GETLEASE, 0)
					t.Logf("lease after the O_RDONLY|O_TRUNC open: %d (F_RDLCK %d, F_UNLCK %d), %v", lt, unix.F_RDLCK, unix.F_UNLCK, err)
				}
			}
			s.after = func(call int, _ *os.File) {
				if call == 1 {
					run(tt.after)
				}
			}
			g := verifyingGate(s)
			d, h := firstOpen(t, g, p)
			if len(errs) > 0 {
				t.Fatalf("the other user: %v", errs)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Fatalf("the file holds %q; want %q", got, tt.want)
			}
			if names := s.seen(); strings.HasPrefix(names[0], "/memfd:") {
				t.Fatalf("clamd was handed %q; want the file itself (under a lease) first", names)
			}
			if d.Allow && len(got) > 0 {
				t.Errorf("open of a file holding EICAR: %s, allowed; want denied", d.Reason)
			}
			if d.Held && !bytes.Equal(h.bufs[len(h.bufs)-1], got) {
				t.Errorf("bytes handed over for the page cache: %q; want the file's, %q", h.bufs[len(h.bufs)-1], got)
			}
			// The EICAR state back, as far as anyone can: no verdict of
			// the scan above may let it through.
			if err := os.WriteFile(p, eicar, 0o666); err != nil {
				t.Fatal(err)
			}
			f2, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f2.Close()
			if d := g.Check(t.Context(), f2, cache.Opener{Path: "f", Pid: 4242, Uid: 1000}); d.Allow {
				t.Errorf("open of EICAR after it: %s (cached %v), allowed; want denied", d.Reason, d.Cached)
			}
			noLeasesLeft(t)
		})
	}
}

// TestGateLeasesBrokenTogether: several scans hold read leases on one
// file at once (as two mounts of one backing directory, or more, would:
// a Gate each), and one open for writing by another user breaks them
// all. The kernel sends a SIGIO for each, which may arrive as one: the
// writer still goes on at once, every lease is given up, and every scan
// is made again on a private copy; none is left held.
func TestGateLeasesBrokenTogether(t *testing.T) {
	const n = 4
	c := clamdtest.New(t, clamdtest.Options{})
	dir := ownTmpfs(t)
	clean := bytes.Repeat([]byte("c"), 4000)
	p := filepath.Join(dir, "shared")
	if err := os.WriteFile(p, clean, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o666); err != nil {
		t.Fatal(err)
	}
	pool := realPool(t, c)
	var arrived sync.WaitGroup
	arrived.Add(n)
	written := make(chan struct{})
	var writerErr error
	var writerTook time.Duration
	scanners := make([]*hookScanner, n)
	for i := range scanners {
		s := &hookScanner{Scanner: pool}
		s.before = func(call int, f *os.File) {
			if call != 1 {
				return
			}
			if lt, err := unix.FcntlInt(f.Fd(), unix.F_GETLEASE, 0); err != nil || lt != unix.F_RDLCK {
				t.Errorf("scan %d: no read lease on the file handed to clamd (%d, %v)", i, lt, err)
			}
			arrived.Done()
			if i == 0 {
				arrived.Wait() // every scan holds its lease
				start := time.Now()
				writerErr = ddNobody(p, nil) // opened for writing, nothing written
				writerTook = time.Since(start)
				close(written)
			}
			<-written
		}
		scanners[i] = s
	}
	var wg sync.WaitGroup
	ds := make([]cache.Decision, n)
	for i, s := range scanners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := verifyingGate(s)
			f, err := os.Open(p)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			ds[i] = g.Check(t.Context(), f, cache.Opener{Path: "shared", Pid: 4242, Uid: 1000})
		}()
	}
	wg.Wait()
	if writerErr != nil {
		t.Fatalf("the other user's open for writing: %v", writerErr)
	}
	if writerTook > 10*time.Second {
		t.Errorf("the other user's open for writing waited %v for %d leases: not all given up on the break", writerTook, n)
	}
	for i, s := range scanners {
		names := s.seen()
		if len(names) != 2 || strings.HasPrefix(names[0], "/memfd:") || !strings.HasPrefix(names[1], "/memfd:") {
			t.Errorf("scan %d: clamd was handed %q; want the file, then, its lease broken, a private copy", i, names)
		}
		if !ds[i].Allow {
			t.Errorf("scan %d: %s; want allowed", i, ds[i].Reason)
		}
	}
	noLeasesLeft(t)
}

// TestGateLeasesNoneLeft: many scans of many files at once, some of
// whose leases another user breaks, some of whose openers give up under
// the scan (the scan is passed on to a descriptor of its own), some of
// whose files are emptied. Once they are over no lease is left held, on
// any descriptor (numbers are reused as files are closed), and a new
// scan of a file nobody writes is again judged under a lease.
func TestGateLeasesNoneLeft(t *testing.T) {
	c := clamdtest.New(t, clamdtest.Options{})
	dir := ownTmpfs(t)
	clean := bytes.Repeat([]byte("c"), 3000)
	const files, rounds = 6, 4
	paths := make([]string, files)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(paths[i], clean, 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(paths[i], 0o666); err != nil {
			t.Fatal(err)
		}
	}
	pool := realPool(t, c)
	truncRdonly := truncRdonly(t)
	var mu sync.Mutex
	var errs []error
	attack := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	s := &hookScanner{Scanner: pool}
	g := cache.NewGate(s, cache.Options{MaxEntries: 64, TTL: time.Hour, Timeout: 60 * time.Second, VerifyMaxSize: 1 << 20, MaxConcurrent: 4})
	cancels := sync.Map{} // path -> context.CancelFunc of its opener
	s.before = func(call int, f *os.File) {
		name, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
		if strings.HasPrefix(name, "/memfd:") {
			return
		}
		i, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(name), "f"))
		switch call % 4 {
		case 0:
			attack(ddNobody(name, nil)) // breaks the lease
		case 1:
			if cancel, ok := cancels.Load(name); ok {
				cancel.(context.CancelFunc)() // the opener gives up
			}
		case 2:
			if i%2 == 0 {
				attack(truncRdonly(name))
			}
		}
	}
	var wg sync.WaitGroup
	for r := range rounds {
		for i, p := range paths {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r > 0 {
					os.WriteFile(p, clean, 0o666) // a new state to scan
				}
				f, err := os.Open(p)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				cancels.Store(p, cancel)
				d := g.Check(ctx, f, cache.Opener{Path: filepath.Base(p), Pid: uint32(4000 + i), Uid: 1000, ReadOnly: i%3 == 0, NoAtime: i%3 == 0})
				if !d.Allow && d.Reason != cache.ReasonCancelled {
					t.Errorf("%s: %s (%v); want allowed", p, d.Reason, d.Err)
				}
			}()
		}
		wg.Wait()
	}
	if len(errs) > 0 {
		t.Fatalf("the other user: %v", errs)
	}
	noLeasesLeft(t)
	p := filepath.Join(dir, "last")
	if err := os.WriteFile(p, clean, 0o644); err != nil {
		t.Fatal(err)
	}
	last := &hookScanner{Scanner: pool}
	g2 := cache.NewGate(last, cache.Options{MaxEntries: 4, TTL: time.Hour, Timeout: 60 * time.Second, VerifyMaxSize: 1 << 20})
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d := g2.Check(t.Context(), f, cache.Opener{Path: "last", Pid: 4242, Uid: 1000}); !d.Allow {
		t.Fatalf("clean file: %s; want allowed", d.Reason)
	}
	if names := last.seen(); len(names) != 1 || strings.HasPrefix(names[0], "/memfd:") {
		t.Errorf("clamd was handed %q; want the file itself, under a lease", names)
	}
	noLeasesLeft(t)
}

// TestGateLeaseDeviceUnderneath: a user owns a disk image, which root
// (udisks, for a user of the desktop) attached to a loop device and
// mounted: an ext4 filesystem, on which clamfuse would take leases. The
// user changes the file's bytes by writing the image, below the
// filesystem, where no lease sees it, and evicts the file's pages from
// the page cache (as any reader may: POSIX_FADV_DONTNEED), so that the
// next read of the file reads the device again. Clean bytes while clamd
// reads the file, EICAR back after: the digest (taken before) and the
// bytes handed over for the page cache (read after) are EICAR's, and
// clamd judged other bytes. No open may be allowed on that verdict, nor
// its bytes held as judged, nor EICAR cached clean.
func TestGateLeaseDeviceUnderneath(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "a loop device needs root")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Skip(t, "%s: %v", tool, err)
		}
	}
	c := clamdtest.New(t, clamdtest.Options{})
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		testenv.Skip(t, "losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	if out, err := exec.Command("mkfs.ext4", "-q", loop).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := os.Chown(img, 65534, 65534); err != nil { // the user's image
		t.Fatal(err)
	}

	eicar := clamdtest.EICAR()
	clean := bytes.Repeat([]byte("c"), len(eicar))
	p := filepath.Join(mnt, "f")
	if err := os.WriteFile(p, eicar, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil { // its block allocated, and written
		t.Fatal(err)
	}
	blk := 0 // FIBMAP (1): the device block of the file's block 0
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), 1, uintptr(unsafe.Pointer(&blk))); e != 0 || blk == 0 {
		t.Fatalf("FIBMAP: %v, block %d", e, blk)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		t.Fatal(err)
	}
	// put writes data into the image where the file's block is, and
	// evicts the file's pages, as the user.
	put := func(data []byte) error {
		w := exec.Command("dd", "of="+img, "bs="+strconv.FormatInt(fs.Bsize, 10), "seek="+strconv.Itoa(blk), "conv=notrunc", "status=none")
		w.Stdin = bytes.NewReader(data)
		if err := asNobody(w); err != nil {
			return err
		}
		return asNobody(exec.Command("dd", "if="+p, "iflag=nocache", "count=0", "status=none"))
	}
	if err := put(eicar); err != nil { // the user can, before any scan
		t.Fatalf("the user's write of the image: %v", err)
	}
	var errs []error
	s := &hookScanner{Scanner: realPool(t, c)}
	s.before = func(call int, _ *os.File) {
		if call == 1 {
			if err := put(clean); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.after = func(call int, _ *os.File) {
		if call == 1 {
			if err := put(eicar); err != nil {
				errs = append(errs, err)
			}
		}
	}
	g := verifyingGate(s)
	h := &holdAll{}
	d := g.Check(t.Context(), f, cache.Opener{Path: "f", Pid: 4242, Uid: 1000, Into: h})
	if len(errs) > 0 {
		t.Fatalf("the user: %v", errs)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, eicar) {
		t.Fatalf("the file holds %q; want EICAR", got)
	}
	t.Logf("clamd was handed %q", s.seen())
	if d.Allow {
		t.Errorf("open of EICAR whose device gave clamd clean bytes: %s, allowed (held %v); want denied", d.Reason, d.Held)
	}
	if d.Held && bytes.Equal(h.bufs[len(h.bufs)-1], eicar) {
		t.Errorf("EICAR handed over for the page cache as the bytes judged")
	}
	f2, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if d := g.Check(t.Context(), f2, cache.Opener{Path: "f", Pid: 4242, Uid: 1000}); d.Allow {
		t.Errorf("open of EICAR again: %s (cached %v), allowed; want denied", d.Reason, d.Cached)
	}
}
