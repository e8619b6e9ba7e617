package fs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// TestOpenLinkedNameSwapped: an open opens the backing name first and
// checks the inode it got (Node.openLinked), with no fstatat before it.
// The kernel trusts its names for an hour here and nothing tells it of
// changes, so each open below reaches clamfuse for the node of the file
// that was there, while the backing name now leads elsewhere: an infected
// file renamed over it (denied, never read), a FIFO with no writer (never
// blocks, never left open), a symlink (never followed by clamfuse);
// and a file whose backing permissions no longer let the caller read it
// (EACCES, the backing filesystem's answer, as before). The name then
// reads as it is in the backing directory, each time judged.
func TestOpenLinkedNameSwapped(t *testing.T) {
	backing, m, _ := testMount(t, MountOptions{AllowOther: true, FS: Options{AttrValid: time.Hour, EntryValid: time.Hour}})
	// Let the other user reach the mount and the tree.
	for _, p := range []string{backing, m.Target, filepath.Dir(m.Target)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	clean := []byte("clean file\n")
	for _, name := range []string{"infected", "fifo", "symlink", "private"} {
		mustWrite(t, filepath.Join(backing, name), clean)
	}
	mustWrite(t, filepath.Join(backing, "target"), []byte("TARGET"))
	// Known to the kernel, judged clean, cached; and readable by the
	// other user.
	for _, name := range []string{"infected", "fifo", "symlink", "private"} {
		if out := runOn(t, m, "cat", filepath.Join(m.Target, name)); out != string(clean) {
			t.Fatalf("%s before the swap: %q", name, out)
		}
	}
	if out, err := readAs(t, m, 65534, "cat "+filepath.Join(m.Target, "private")); err != nil || out != string(clean) {
		t.Fatalf("private as 65534 before the chmod: %q, %v", out, err)
	}

	mustWrite(t, filepath.Join(backing, "eicar.tmp"), clamdtest.EICAR())
	if err := os.Rename(filepath.Join(backing, "eicar.tmp"), filepath.Join(backing, "infected")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(backing, "fifo")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(backing, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(backing, "symlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("target", filepath.Join(backing, "symlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(backing, "private"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		uid     uint32
		wantErr string // in the output of the failing read; "" for success
		want    string // the output of a successful read
	}{
		{"infected", 0, "Permission denied", ""},
		{"fifo", 0, "", ""},          // the kernel's own FIFO, no writer: reads nothing, at once
		{"symlink", 0, "", "TARGET"}, // clamfuse never follows it: the kernel looks it up, follows it, opens the target
		{"private", 65534, "Permission denied", ""},
	}
	for _, tc := range tests {
		// dd opens with O_NONBLOCK: a FIFO opened by the kernel after its
		// lookup then does not wait for a writer either.
		out, err := readAs(t, m, tc.uid, "dd if="+filepath.Join(m.Target, tc.name)+" iflag=nonblock status=none")
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(out, tc.wantErr) {
				t.Errorf("%s as %d after the swap: %q, %v; want %q", tc.name, tc.uid, out, err, tc.wantErr)
			}
		case err != nil || out != tc.want:
			t.Errorf("%s as %d after the swap: %q, %v; want %q", tc.name, tc.uid, out, err, tc.want)
		}
		if bytes.Contains([]byte(out), clamdtest.EICAR()) {
			t.Errorf("%s: read the infected bytes", tc.name)
		}
	}
	// Nothing holds the backing FIFO open for reading: a non-blocking
	// writer would then succeed instead of failing with ENXIO.
	if w, err := unix.Open(filepath.Join(backing, "fifo"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(w)
		t.Errorf("a reader of the backing FIFO is left open")
	} else if err != syscall.ENXIO {
		t.Errorf("open of the backing FIFO for writing: %v, want ENXIO", err)
	}
	// The backing file is still the caller's to refuse, and root's to read.
	if out := runOn(t, m, "cat", filepath.Join(m.Target, "private")); out != string(clean) {
		t.Errorf("private as root: %q", out)
	}
}

// readAs runs script as uid against the mount m, within a minute, and
// returns its output and error.
func readAs(t *testing.T, m *Mounted, uid uint32, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := hangReported(t, exec.CommandContext(ctx, "sh", "-c", script))
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		abortMount(t, m.Target)
		t.Fatalf("%s: no answer within a minute; the connection was aborted", script)
	}
	return string(out), err
}

// TestOpenLinkedInodeNumberReused: the backing name of a file the kernel
// knows is replaced by a symlink that got the file's inode number (ext4
// gives a new inode the number just freed): an open of the kernel's node
// must not take the symlink for its file (the open of the name fails
// ELOOP, and the name then leads to that inode number). It is answered
// ESTALE, and the kernel looks the name up again and follows the
// symlink, as natively. (TestOpenLinkedNameSwapped failed on it once in
// CI, when the swapped symlink got the number.)
func TestOpenLinkedInodeNumberReused(t *testing.T) {
	backing, m, _ := testMount(t, MountOptions{FS: Options{AttrValid: time.Hour, EntryValid: time.Hour}})
	mustWrite(t, filepath.Join(backing, "target"), []byte("TARGET"))
	name := filepath.Join(backing, "l")
	mustWrite(t, name, []byte("clean file\n"))
	if out := runOn(t, m, "cat", filepath.Join(m.Target, "l")); out != "clean file\n" {
		t.Fatalf("l before the swap: %q", out)
	}
	var st unix.Stat_t
	if err := unix.Lstat(name, &st); err != nil {
		t.Fatal(err)
	}
	old := st.Ino
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	// The number is free once clamfuse has closed the file too (its
	// RELEASE may come a moment after cat's close): try until then.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := os.Symlink("target", name); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(name, &st); err != nil {
			t.Fatal(err)
		}
		if st.Ino == old {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("the symlink never got the file's inode number %d (%d): the open below is the plain swap", old, st.Ino)
			break
		}
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if out, err := readAs(t, m, 0, "cat "+filepath.Join(m.Target, "l")); err != nil || out != "TARGET" {
		t.Errorf("l after the swap (inode number reused: %v): %q, %v; want TARGET", st.Ino == old, out, err)
	}
}
