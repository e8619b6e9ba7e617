package fs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/clamdtest"
)

// TestPassthroughReads proves FUSE passthrough on clamfuse's own mount,
// mount.passthrough on (MountOptions.Passthrough): a clean file opened for
// reading is read by the kernel from the descriptor the gate judged, no
// READ reaching clamfuse; an infected one is still denied at open. Without
// passthrough granted the same opens fall back to READs.
func TestPassthroughReads(t *testing.T) {
	content := strings.Repeat("clean and passed through\n", 50000)
	for _, tc := range []struct {
		name   string
		mo     MountOptions
		passed bool
	}{
		{"granted", MountOptions{Passthrough: true}, true},
		{"off", MountOptions{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backing, m, seen := testMount(t, tc.mo)
			if m.Passthrough() != tc.passed {
				t.Fatalf("passthrough granted: %v, want %v (protocol %v, %v)", m.Passthrough(), tc.passed,
					m.conn.Protocol(), m.conn.Features2())
			}
			if err := os.WriteFile(filepath.Join(backing, "clean"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(backing, "infected"), clamdtest.EICAR(), 0o644); err != nil {
				t.Fatal(err)
			}
			seen.take()
			if got := runOn(t, m, "cat", filepath.Join(m.Target, "clean")); got != content {
				t.Fatalf("read %d bytes through the mount, want the backing file's %d", len(got), len(content))
			}
			reads, _ := seen.take()
			t.Logf("%d READs", len(reads))
			if tc.passed && len(reads) != 0 {
				t.Errorf("%d READs reached clamfuse for a passed-through file", len(reads))
			}
			if !tc.passed && len(reads) == 0 {
				t.Error("no READ reached clamfuse, yet nothing was passed through")
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "cat", filepath.Join(m.Target, "infected")).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "Permission denied") {
				t.Errorf("cat of an infected file: %v, %q; want Permission denied", err, out)
			}
		})
	}
}
