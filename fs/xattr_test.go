package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestGetxattrOpenFile: the attributes free to read (security.*, the
// ACLs) of a file open through the mount are read through the open
// file's descriptor (Node.openConn), the GETXATTR the kernel sends
// before every write (security.capability). They must be the backing
// file's as they are now, whatever the file's open mode: a value set,
// changed or removed behind the mount shows at once, and a file
// capability set behind the mount is seen, so that the kernel drops it
// at the next write, which must not leave it on the backing file (a
// changed program keeping its capabilities).
func TestGetxattrOpenFile(t *testing.T) {
	big := strings.Repeat("over passthroughMinRead\n", 50000)
	for _, tc := range []struct {
		name    string
		content string
		holder  string // shell redirection keeping the file open on fd 3; "" for none
		writes  bool
	}{
		{"closed", "small\n", "", false},
		{"open for reading (cached mode)", "small\n", "3<", false},
		{"open for reading (passthrough)", big, "3<", false},
		{"open for writing", "small\n", "3>>", true},
		{"open for reading and writing", big, "3<>", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backing, m, _ := testMount(t, MountOptions{Passthrough: true})
			b, f := filepath.Join(backing, "f"), filepath.Join(m.Target, "f")
			mustWrite(t, b, []byte(tc.content))
			setXattr(t, b, "security.clamfuse-test", []byte("v1"))
			runOn(t, m, "cat", f) // judged: the holder's open is allowed

			var in io.WriteCloser
			if tc.holder != "" {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				// The holder writes a line to fd 3 for each line it reads.
				h := exec.CommandContext(ctx, "sh", "-c", `exec `+tc.holder+`"$1"; while read x; do echo x >&3; done`, "sh", f)
				var err error
				if in, err = h.StdinPipe(); err != nil {
					t.Fatal(err)
				}
				if err := h.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() { in.Close(); _ = h.Wait() }()
				waitFor(t, "the holder's open", func() bool { return openHandles(t, m, b) == 1 })
				if n := nodeOf(t, m, b); n.openConn() == nil {
					t.Fatal("a file open through the mount, but Node.openConn has no descriptor")
				}
			}

			want := func(name string, value []byte) {
				t.Helper()
				got, err := xattrOn(t, m, f, name)
				switch {
				case value == nil && !errors.Is(err, unix.ENODATA):
					t.Errorf("%s through the mount: %q, %v; want ENODATA, as on the backing file", name, got, err)
				case value != nil && (err != nil || !bytes.Equal(got, value)):
					t.Errorf("%s through the mount: %q, %v; want the backing file's %q", name, got, err, value)
				}
			}
			want("security.clamfuse-test", []byte("v1"))
			setXattr(t, b, "security.clamfuse-test", []byte("v2"))
			want("security.clamfuse-test", []byte("v2"))
			if err := unix.Removexattr(b, "security.clamfuse-test"); err != nil {
				t.Fatal(err)
			}
			want("security.clamfuse-test", nil)

			// A file capability set behind the mount.
			capability := vfsCap(1 << unix.CAP_NET_RAW)
			setXattr(t, b, "security.capability", capability)
			want("security.capability", capability)
			if !tc.writes {
				return
			}
			before := mtime(t, b)
			if _, err := io.WriteString(in, "write\n"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the holder's write", func() bool { return mtime(t, b) != before })
			if v, err := getXattr(b, "security.capability"); !errors.Is(err, unix.ENODATA) {
				t.Errorf("security.capability of the backing file after a write through the mount: %x, %v; want it dropped (ENODATA)", v, err)
			}
			want("security.capability", nil)
		})
	}
}

// TestGetxattrWhileClosing: GETXATTRs of a file that another process
// opens and closes all the while: a descriptor found open may be closed
// before it is read (Node.openConn's Control then fails, and the inode
// is looked up as for a file not open); every answer is the backing
// file's value.
func TestGetxattrWhileClosing(t *testing.T) {
	backing, m, _ := testMount(t, MountOptions{Passthrough: true})
	b, f := filepath.Join(backing, "f"), filepath.Join(m.Target, "f")
	mustWrite(t, b, []byte("small\n"))
	setXattr(t, b, "security.clamfuse-test", []byte("v1"))
	runOn(t, m, "cat", f)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	churn := exec.CommandContext(ctx, "sh", "-c", `while :; do exec 3<"$1"; exec 3<&-; exec 3>>"$1"; exec 3>&-; done`, "sh", f)
	if err := churn.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = churn.Process.Kill(); _ = churn.Wait() }()
	waitFor(t, "the first open", func() bool { return openHandles(t, m, b) > 0 })
	for i := 0; i < 2000; i++ {
		got, err := xattrOn(t, m, f, "security.clamfuse-test")
		if err != nil || string(got) != "v1" {
			t.Fatalf("GETXATTR %d while the file is opened and closed: %q, %v; want v1", i, got, err)
		}
	}
}

// xattrOn reads attribute name of p through the mount m, within a
// minute (else the connection is aborted).
func xattrOn(t *testing.T, m *Mounted, p, name string) ([]byte, error) {
	t.Helper()
	type result struct {
		v   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := getXattr(p, name)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(time.Minute):
		abortMount(t, m.Target)
		t.Fatalf("getxattr %s %s: no answer within a minute; the connection was aborted", p, name)
		return nil, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	k, err := unix.Getxattr(p, name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:k], nil
}

func setXattr(t *testing.T, p, name string, v []byte) {
	t.Helper()
	if err := unix.Setxattr(p, name, v, 0); err != nil {
		t.Fatalf("setxattr %s %s: %v", p, name, err)
	}
}

func mtime(t *testing.T, p string) unix.Timespec {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mtim
}

// vfsCap is a security.capability value (struct vfs_cap_data, revision
// 2, effective) granting the capabilities of the low word permitted.
func vfsCap(permitted uint32) []byte {
	var b bytes.Buffer
	for _, w := range []uint32{0x02000000 | 1, permitted, 0, 0, 0} {
		_ = binary.Write(&b, binary.LittleEndian, w)
	}
	return b.Bytes()
}

// nodeOf is the node of backing file p.
func nodeOf(t *testing.T, m *Mounted, p string) *Node {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	m.fsys.treeMu.Lock()
	defer m.fsys.treeMu.Unlock()
	n := m.fsys.nodes.get(inoKey{st.Dev, st.Ino})
	if n == nil {
		t.Fatalf("no node of %s", p)
	}
	return n
}
