package fs

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/cache"
)

// flagsGate records, at each Check, what the filesystem told the gate of
// the opener's descriptor, and that descriptor's status flags then.
type flagsGate struct {
	Gate
	mu   sync.Mutex
	seen []checked
}

type checked struct {
	stat, noatime, readOnly bool
	flags                   int
}

func (g *flagsGate) wrap(real Gate) { g.Gate = real }

func (g *flagsGate) Check(ctx context.Context, f *os.File, who cache.Opener) cache.Decision {
	fl, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	g.mu.Lock()
	g.seen = append(g.seen, checked{who.Stat != nil, who.NoAtime, who.ReadOnly, fl})
	g.mu.Unlock()
	return g.Gate.Check(ctx, f, who)
}

func (g *flagsGate) last() checked {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.seen) == 0 {
		return checked{}
	}
	return g.seen[len(g.seen)-1]
}

// fdFlags returns the status flags (fdinfo) of this process's descriptors
// of the file p.
func fdFlags(t *testing.T, p string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	mustNoErr(t, err)
	var flags []int
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || l != p {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		for line := range strings.SplitSeq(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				fl, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				mustNoErr(t, err)
				flags = append(flags, int(fl))
			}
		}
	}
	return flags
}

// TestOpenStatusFlags: the gate reads the opener's descriptor for the
// digest of a cached verdict with O_NOATIME already set, in the fcntl
// that clears the O_NONBLOCK of the open, and is given the fstat made
// after the open (cache.Opener.Stat, NoAtime); the descriptor the open
// is answered with has the opener's flags again (no O_NOATIME, blocking),
// so that reads through the mount, clamfuse's or the kernel's in
// passthrough mode, move the access time as on the backing directory.
// The gate is told the descriptor is read-only (cache.Opener.ReadOnly:
// a scan may pass it to clamd as it is) only when it is.
func TestOpenStatusFlags(t *testing.T) {
	tests := []struct {
		name   string
		open   string // the shell redirection that opens "$1" as 3
		access int
	}{
		{"read-only", `3<"$1"`, unix.O_RDONLY},
		{"read-write", `3<>"$1"`, unix.O_RDWR},
	}
	fg := &flagsGate{}
	backing, m, _ := testMountGate(t, MountOptions{FS: Options{Gate: fg}},
		cache.Options{MaxEntries: 100, TTL: time.Hour, Timeout: time.Minute, VerifyMaxSize: 1 << 20})
	gate := fg.Gate.(*cache.Gate)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "f-" + tt.name
			p := filepath.Join(backing, name)
			mustNoErr(t, os.WriteFile(p, []byte("clean contents"), 0o644))
			path := filepath.Join(m.Target, name)
			runAs(t, m, 0, "cat "+path+" >/dev/null") // scanned, cached
			hits := gate.Stats().Hits
			// A process that holds the file open, read nothing, until
			// its stdin closes.
			cmd := exec.Command("sh", "-c", `exec `+tt.open+` && echo open && read x`, "sh", path)
			stdin, err := cmd.StdinPipe()
			mustNoErr(t, err)
			stdout, err := cmd.StdoutPipe()
			mustNoErr(t, err)
			mustNoErr(t, cmd.Start())
			defer func() {
				stdin.Write([]byte("\n"))
				stdin.Close()
				mustNoErr(t, cmd.Wait())
			}()
			if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "open\n" {
				t.Fatalf("open: %q, %v", line, err)
			}
			if got := gate.Stats().Hits; got != hits+1 {
				t.Errorf("%d cache hits for the open; want 1", got-hits)
			}
			c := fg.last()
			if !c.stat || !c.noatime || c.flags&unix.O_NOATIME == 0 || c.flags&unix.O_NONBLOCK != 0 {
				t.Errorf("at the check: Stat given %v, NoAtime %v, flags %#o; want a Stat, NoAtime, O_NOATIME set, O_NONBLOCK not", c.stat, c.noatime, c.flags)
			}
			if want := c.flags&unix.O_ACCMODE == unix.O_RDONLY; c.readOnly != want || (tt.access == unix.O_RDWR && c.readOnly) {
				t.Errorf("at the check: ReadOnly %v for a descriptor with flags %#o; want %v", c.readOnly, c.flags, want)
			}
			flags := fdFlags(t, p)
			if len(flags) != 1 {
				t.Fatalf("%d descriptors of %s held; want the handle's one", len(flags), p)
			}
			if fl := flags[0]; fl&unix.O_ACCMODE != tt.access || fl&(unix.O_NOATIME|unix.O_NONBLOCK) != 0 {
				t.Errorf("the handle's descriptor has flags %#o; want access %#o, no O_NOATIME, no O_NONBLOCK", fl, tt.access)
			}
		})
	}
}
