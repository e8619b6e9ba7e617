package fs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/fs/internal/caller"
	"golang.org/x/sys/unix"
)

// TestOpenRegularNeverBlocks opens what a swap in the backing directory
// can put under a name between clamfuse's check and its open: a FIFO
// with no writer (a plain open for reading would block until a writer
// came, holding a request thread and the caller for good), a directory,
// a symlink. Each must fail at once with ESTALE (or ELOOP for the
// symlink) and leave no descriptor open; a regular file opens with
// O_NONBLOCK cleared unless asked for.
func TestOpenRegularNeverBlocks(t *testing.T) {
	dir := t.TempDir()
	mustNil := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustNil(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	mustNil(os.Mkdir(filepath.Join(dir, "dir"), 0o755))
	mustNil(os.Symlink("file", filepath.Join(dir, "link")))
	mustNil(os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644))
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	mustNil(err)
	defer unix.Close(dirfd)

	tests := []struct {
		name  string
		flags int
		want  error // nil: a descriptor
	}{
		{"fifo", unix.O_RDONLY, syscall.ESTALE},
		{"fifo", unix.O_RDWR, syscall.ESTALE},
		{"dir", unix.O_RDONLY, syscall.ESTALE},
		{"link", unix.O_RDONLY, syscall.ELOOP},
		{"file", unix.O_RDONLY, nil},
		{"file", unix.O_RDONLY | unix.O_NONBLOCK, nil},
	}
	for _, tc := range tests {
		type result struct {
			fd  int
			err error
		}
		done := make(chan result, 1)
		go func() {
			fd, err := openRegular(caller.Cred{}, dirfd, tc.name, tc.flags|unix.O_CLOEXEC, nil, nil)
			done <- result{fd, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			// Release the open blocked on the FIFO, then fail.
			if w, err := unix.Open(filepath.Join(dir, tc.name), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
				unix.Close(w)
			}
			r = <-done
			t.Errorf("openRegular(%s, %#o) blocked until a writer came", tc.name, tc.flags)
		}
		if !errors.Is(r.err, tc.want) {
			t.Errorf("openRegular(%s, %#o) = %v, want %v", tc.name, tc.flags, r.err, tc.want)
		}
		if r.err == nil {
			fl, err := unix.FcntlInt(uintptr(r.fd), unix.F_GETFL, 0)
			if err != nil || (fl&unix.O_NONBLOCK != 0) != (tc.flags&unix.O_NONBLOCK != 0) {
				t.Errorf("openRegular(%s, %#o): flags %#o (%v), want O_NONBLOCK only if asked", tc.name, tc.flags, fl, err)
			}
			unix.Close(r.fd)
		}
	}
	// Nothing may hold the FIFO open for reading: a non-blocking writer
	// would then succeed instead of failing with ENXIO.
	if w, err := unix.Open(filepath.Join(dir, "fifo"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(w)
		t.Errorf("a reader of the FIFO is left open")
	}
}

// TestOpenRegularKeepsStatusFlags: checkRegular clears the O_NONBLOCK
// that openRegular adds by setting the flags asked for (no F_GETFL), so
// each status flag the caller asked for must still be there afterwards,
// and none it did not ask for, whether opened by name or reopened
// through a descriptor.
func TestOpenRegularKeepsStatusFlags(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	const status = unix.O_APPEND | unix.O_NOATIME | unix.O_NONBLOCK | unix.O_ASYNC | unix.O_DIRECT
	for _, flags := range []int{
		unix.O_RDONLY,
		unix.O_RDONLY | unix.O_NOATIME,
		unix.O_RDONLY | unix.O_NONBLOCK,
		unix.O_RDONLY | unix.O_NOATIME | unix.O_NONBLOCK,
		unix.O_WRONLY | unix.O_APPEND,
		unix.O_RDWR | unix.O_APPEND | unix.O_NOATIME,
		unix.O_RDWR | unix.O_DSYNC,
	} {
		fd, err := openRegular(caller.Cred{}, dirfd, "file", flags|unix.O_CLOEXEC, nil, nil)
		if err != nil {
			t.Fatalf("openRegular(%#o): %v", flags, err)
		}
		again, err := reopenRegular(caller.Cred{}, fd, flags|unix.O_CLOEXEC, nil)
		if err != nil {
			t.Fatalf("reopenRegular(%#o): %v", flags, err)
		}
		for name, d := range map[string]int{"opened": fd, "reopened": again} {
			fl, err := unix.FcntlInt(uintptr(d), unix.F_GETFL, 0)
			if err != nil {
				t.Fatal(err)
			}
			if fl&status != flags&status || fl&unix.O_ACCMODE != flags&unix.O_ACCMODE {
				t.Errorf("%s with %#o: status flags %#o, want %#o", name, flags, fl&status, flags&status)
			}
		}
		unix.Close(again)
		unix.Close(fd)
	}
}
