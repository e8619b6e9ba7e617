package mounttest

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/testenv"
)

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":             "/plain",
		`/with\040space`:     "/with space",
		`/tab\011nl\012`:     "/tab\tnl\n",
		`/back\134slash`:     `/back\slash`,
		`/short\04`:          `/short\04`,
		`/not\09octal`:       `/not\09octal`,
		`/end\134`:           `/end\`,
		`\040lead\040trail`:  " lead trail",
		`/mixed\040a\134b\0`: `/mixed a\b\0`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestReadMounts: the table parses, and holds the root.
func TestReadMounts(t *testing.T) {
	ms := Mounts(t)
	for _, m := range ms {
		if m.MountPoint == "/" && m.FSType != "" && m.Options != "" {
			return
		}
	}
	t.Errorf("no root mount among %d: %+v", len(ms), ms)
}

// TestOutlivesThreads: clamfuse is not killed when threads of the test
// process end. Its Pdeathsig fires when the thread that forked it exits,
// and the Go runtime ends a thread whose goroutine exits while locked to
// it (as clamdtest's do when a clamd stops): a regression test for
// clamfuses killed that way mid-test.
func TestOutlivesThreads(t *testing.T) {
	Require(t)
	var ms []*Mount
	for range 10 {
		ms = append(ms, Start(t, Options{Args: []string{"--clamd", "unix:/nonexistent/clamd.sock"}}))
		for range 20 {
			done := make(chan struct{})
			go func() {
				defer close(done)
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			}()
			<-done
		}
	}
	for i, m := range ms {
		select {
		case <-m.Exited():
			t.Errorf("clamfuse %d of %d died: %v", i+1, len(ms), m.exitErr)
		default:
		}
	}
}

// TestConnAt: the connection number Abort checks is the device minor of
// the topmost mount on the directory now, and -1 once nothing is mounted
// there (Abort then aborts nothing: the number may be another's).
func TestConnAt(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "mounting needs root")
	}
	dir := t.TempDir()
	if got := connAt(dir); got != -1 {
		t.Fatalf("connAt of a plain directory: %d; want -1", got)
	}
	var minors []int
	for range 2 { // stacked: the topmost counts
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		minors = append(minors, int(unix.Minor(st.Dev)))
		if got := connAt(dir); got != minors[len(minors)-1] {
			t.Errorf("connAt: %d; want the topmost mount's minor %d", got, minors[len(minors)-1])
		}
	}
	for range 2 {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := connAt(dir); got != -1 {
		t.Errorf("connAt once unmounted: %d; want -1", got)
	}
}
