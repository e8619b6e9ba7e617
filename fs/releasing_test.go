package fs

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/fs/internal/fuse"
)

// TestDenyAfterClose (scan.while_written = "deny"): a process closes the
// file it read, then another opens it for writing. The kernel sends the
// reader's RELEASE in the background, after its close returned, and the
// request loop may serve the writer's OPEN beside it; here that RELEASE
// is held up (30 ms, before clamfuse sees it): the open must wait for it
// (Server.Releasing) and succeed, not be refused as if the reader still
// had the file open (ETXTBSY). And a reader that still has the file open
// still refuses the writer.
func TestDenyAfterClose(t *testing.T) {
	var slow atomic.Bool
	mo := MountOptions{Passthrough: true}
	mo.FS.DenyWhileWritten = func() bool { return true }
	mo.observe = func(req fuse.Request) {
		if r, ok := req.(*fuse.ReleaseRequest); ok && !r.Dir && slow.Load() {
			time.Sleep(30 * time.Millisecond)
		}
	}
	backing, m, _ := testMount(t, mo)
	b, f := filepath.Join(backing, "f"), filepath.Join(m.Target, "f")
	mustWrite(t, b, []byte("clean\n"))
	runOn(t, m, "cat", f)
	waitFor(t, "the release of cat's handle", func() bool { return openHandles(t, m, b) == 0 })

	for round := 0; round < 3; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		reader := exec.CommandContext(ctx, "sh", "-c", `exec 3<"$1"; read x`, "sh", f)
		in, err := reader.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := reader.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reader's open", func() bool { return openHandles(t, m, b) == 1 })
		if out, err := exec.CommandContext(ctx, "sh", "-c", `echo x >> "$1"`, "sh", f).CombinedOutput(); err == nil {
			t.Errorf("round %d: a writer's open while another process reads: allowed; want ETXTBSY", round)
		} else {
			t.Logf("round %d: writer while read: %v: %s", round, err, out)
		}
		slow.Store(true)
		_, _ = io.WriteString(in, "\n")
		if err := reader.Wait(); err != nil {
			t.Fatal(err)
		}
		runOn(t, m, "sh", "-c", `echo x >> "$1"`, "sh", f)
		slow.Store(false)
		cancel()
		waitFor(t, "the writer's release", func() bool { return openHandles(t, m, b) == 0 })
	}
}
