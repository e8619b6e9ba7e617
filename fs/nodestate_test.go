package fs

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestNodeStateFreed: a file node has a nodeState only while something
// needs it, handles (the first open makes it, the last release frees it,
// the next open makes it again), a handle whose bytes served are not
// checked yet, or an orphan descriptor; a node the kernel keeps but no one
// has open costs its Node alone (issue #12).
func TestNodeStateFreed(t *testing.T) {
	newNode := func() *Node { return &Node{typ: unix.S_IFREG} }
	handle := func(n *Node, writable bool) *Handle { return &Handle{node: n, writable: writable} }
	tests := []struct {
		name string
		run  func(t *testing.T, n *Node)
	}{
		{"open, close, open again", func(t *testing.T, n *Node) {
			for range 2 {
				h := handle(n, false)
				n.addHandle(h, false, nil)
				wantState(t, n, true, "with a handle open")
				n.dropHandle(h)
				wantState(t, n, false, "after the last release")
			}
		}},
		{"two handles", func(t *testing.T, n *Node) {
			h1, h2 := handle(n, true), handle(n, false)
			n.addHandle(h1, false, nil)
			n.addHandle(h2, false, nil)
			if last, _ := n.dropHandle(h2); last {
				t.Error("a reader's release was the last writer's")
			}
			wantState(t, n, true, "with one of two handles released")
			n.hmu.Lock()
			w := n.writersLocked()
			n.hmu.Unlock()
			if w != 1 {
				t.Errorf("%d writers, want 1", w)
			}
			n.dropHandle(h1)
			wantState(t, n, false, "after the last release")
		}},
		{"reading outlives no handle", func(t *testing.T, n *Node) {
			n.verifying(+1)
			wantState(t, n, true, "while a handle's bytes are unchecked")
			n.verifying(-1)
			wantState(t, n, false, "once checked")
		}},
		{"keep survives the state", func(t *testing.T, n *Node) {
			h := handle(n, false)
			n.addHandle(h, false, nil)
			n.keepCache(cacheKey, 0, nil)
			n.dropHandle(h)
			wantState(t, n, false, "after the last release")
			if !n.keepCache(cacheKey, 0, nil) {
				t.Error("the page cache's state was lost with the open state")
			}
		}},
		{"a refused open", func(t *testing.T, n *Node) {
			w := handle(n, true)
			w.tgid.Store(1)
			n.addHandle(w, false, nil)
			r := &Handle{node: n, readable: true}
			r.tgid.Store(2)
			if n.addHandle(r, true, nil) == nil {
				t.Fatal("a read beside another process's writer was not refused")
			}
			n.dropHandle(w)
			wantState(t, n, false, "after the writer's release")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode()
			wantState(t, n, false, "when made")
			tt.run(t, n)
		})
	}
}

// TestNodeStateOrphan: the orphan descriptor keeps the state, and its
// release frees it; a directory's state, once its descriptor is cached,
// stays.
func TestNodeStateOrphan(t *testing.T) {
	fsys, dirs := testTree(t, 1, 16)
	dir := filepath.Join(t.TempDir(), "f")
	mustNoErr(t, os.WriteFile(dir, []byte("x"), 0o644))
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_CLOEXEC, 0)
	mustNoErr(t, err)
	var st unix.Stat_t
	mustNoErr(t, unix.Fstat(fd, &st))
	mustNoErr(t, os.Remove(dir))
	n := fsys.unnamedNode(&st)
	n.keepOrphan(fd)
	wantState(t, n, true, "while it keeps an orphan descriptor")
	if !n.dropOrphan(-1) {
		t.Fatal("no orphan descriptor to drop")
	}
	wantState(t, n, false, "once the orphan descriptor is closed")

	d := dirs[0]
	_, release, err := d.pathFD()
	mustNoErr(t, err)
	release()
	wantState(t, d, true, "for a directory whose descriptor is cached")
	before := fsys.dirs.cached()
	d.Forget()
	wantState(t, d, true, "for a directory forgotten (its state stays with the node)")
	if s := d.st.Load(); s.hasFD || fsys.dirs.cached() != before-1 {
		t.Errorf("the descriptor of a forgotten directory stays cached")
	}
}

// TestNodeStateRace opens and releases handles of one node from many
// goroutines while others read its handles (go test -race): the state
// comes and goes under hmu only.
func TestNodeStateRace(t *testing.T) {
	n := &Node{typ: unix.S_IFREG}
	null, err := os.Open(os.DevNull)
	mustNoErr(t, err)
	defer null.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				h := &Handle{node: n, f: null, writable: g%2 == 0}
				n.addHandle(h, false, nil)
				if fd := n.handleFD(); fd >= 0 {
					unix.Close(fd)
				}
				n.verifying(+1)
				n.keepCache(cacheKey, 0, nil)
				n.verifying(-1)
				n.dropHandle(h)
			}
		}()
	}
	wg.Wait()
	wantState(t, n, false, "after every handle was released")
}

func wantState(t *testing.T, n *Node, want bool, when string) {
	t.Helper()
	n.hmu.Lock()
	got := n.st.Load() != nil
	n.hmu.Unlock()
	if got != want {
		t.Errorf("%s: node state present %v, want %v", when, got, want)
	}
}

// TestNodeStateMounted: through a mount, a file's node gets its state at
// an open and loses it once the kernel releases the last handle, and gets
// it again at the next open (issue #12: a node the kernel keeps costs no
// open state).
func TestNodeStateMounted(t *testing.T) {
	backing, m, _ := testMount(t, MountOptions{})
	mustNoErr(t, os.WriteFile(filepath.Join(backing, "f"), []byte("hello"), 0o644))
	var st unix.Stat_t
	mustNoErr(t, unix.Stat(filepath.Join(backing, "f"), &st))
	path := filepath.Join(m.Target, "f")
	stateWithin := func(want bool, when string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			n := m.fsys.lookupID(&st)
			if n != nil {
				n.hmu.Lock()
				got := n.st.Load() != nil
				n.hmu.Unlock()
				if got == want {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: node %v, state present not %v within 30 s", when, n != nil, want)
			}
			time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
		}
	}
	for i := range 2 {
		// A process that holds the file open until its stdin closes.
		cmd := exec.Command("sh", "-c", `exec 3<"$1" && cat <&3 >/dev/null && echo open && read x`, "sh", path)
		stdin, err := cmd.StdinPipe()
		mustNoErr(t, err)
		stdout, err := cmd.StdoutPipe()
		mustNoErr(t, err)
		mustNoErr(t, cmd.Start())
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "open\n" {
			stdin.Close()
			cmd.Wait()
			t.Fatalf("open %d: %q, %v", i, line, err)
		}
		stateWithin(true, fmt.Sprintf("open %d, held", i))
		stdin.Write([]byte("\n"))
		stdin.Close()
		mustNoErr(t, cmd.Wait())
		stateWithin(false, fmt.Sprintf("open %d, released", i))
	}
}
