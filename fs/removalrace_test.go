package fs

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOpenRacingRemoval: an open of a file whose last name an unlink or a
// rename over it through the mount removes meanwhile opens the file its
// lookup found, as on a local filesystem, through the descriptor the
// removal keeps of it (keepOrphan). An open that came between the
// backing unlink or rename and that keeping found no name and no
// descriptor and failed with ESTALE; the kernel's one retry could race
// the next rename over the name, and then the caller's open failed
// (TestSoakMixed, once in a CI run). The test holds the removal at that
// point (FS.removed) and opens the file the kernel holds meanwhile: the
// open waits for the removal to keep the descriptor (FS.orphanWait).
func TestOpenRacingRemoval(t *testing.T) {
	write := func(t *testing.T, p, content string) {
		t.Helper()
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, []byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		remove func(p string) error
	}{
		{"rename over", func(p string) error { return unix.Rename(p+".new", p) }},
		{"unlink", unix.Unlink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m, _ := testMount(t, MountOptions{})
			p := filepath.Join(m.Target, "f")
			write(t, p, "the file looked up\n")
			write(t, p+".new", "the file renamed over it\n")
			// The kernel holds the file: a descriptor of it that opens
			// it again through /proc, with no lookup of its name.
			pin, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pin)

			reached, release := make(chan struct{}), make(chan struct{})
			hold := func() { close(reached); <-release }
			m.fsys.removed.Store(&hold)
			waiting := make(chan struct{})
			var once sync.Once // the kernel retries a request that failed with ESTALE
			wait := func() { once.Do(func() { close(waiting) }) }
			m.fsys.orphanWait.Store(&wait)
			removed := make(chan error, 1)
			go func() { removed <- tc.remove(p) }()
			select {
			case <-reached:
			case err := <-removed:
				t.Fatalf("%s ended without reaching the hook: %v", tc.name, err)
			case <-time.After(time.Minute):
				t.Fatalf("%s did not reach the hook", tc.name)
			}
			m.fsys.removed.Store(nil)

			type result struct {
				data string
				err  error
			}
			opened := make(chan result, 1)
			go func() {
				fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pin), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					opened <- result{err: err}
					return
				}
				defer unix.Close(fd)
				b := make([]byte, 100)
				n, err := unix.Read(fd, b)
				opened <- result{string(b[:max(n, 0)]), err}
			}()
			select {
			case <-waiting:
			case r := <-opened:
				close(release)
				t.Fatalf("the open racing the %s ended before it: %q, %v; want it to wait for the descriptor kept", tc.name, r.data, r.err)
			case <-time.After(time.Minute):
				close(release)
				t.Fatal("the open racing the removal neither waited nor ended")
			}
			close(release)
			if r := <-opened; r.err != nil || r.data != "the file looked up\n" {
				t.Errorf("the open racing the %s: %q, %v; want the file looked up", tc.name, r.data, r.err)
			}
			if err := <-removed; err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		})
	}
}
