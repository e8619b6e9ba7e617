package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLookupAttrsOfOneInode: while another process swaps two files'
// names in the backing directory as fast as it can (renameat2
// RENAME_EXCHANGE in a loop) (a user racing the
// mount's lookups), every stat of one of those names through the mount
// shows the inode number and the size of one and the same file: a
// LOOKUP answers with the attributes of the stat that found the entry,
// never an inode's number with another's size. With invalidation on
// (names trusted long, each rename invalidated) and off (names trusted
// for a moment only), both of which send LOOKUPs all along.
func TestLookupAttrsOfOneInode(t *testing.T) {
	for _, watched := range []bool{true, false} {
		t.Run(fmt.Sprintf("invalidation=%v", watched), func(t *testing.T) {
			backing, m, _ := testMount(t, MountOptions{FS: Options{
				AttrValid: time.Millisecond, EntryValid: time.Millisecond, Invalidation: watched, WatchedValid: time.Hour}})
			sizes := map[uint64]int64{} // inode -> size
			for name, size := range map[string]int{"a": 1, "b": 100 << 10} {
				p := filepath.Join(backing, name)
				if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
					t.Fatal(err)
				}
				var st unix.Stat_t
				if err := unix.Stat(p, &st); err != nil {
					t.Fatal(err)
				}
				sizes[st.Ino] = st.Size
			}
			// The swapper is this binary again (TestSwapHelper): the
			// watcher ignores clamfuse's own changes, and this process
			// is clamfuse.
			ctx, cancel := context.WithCancel(context.Background())
			swapper := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSwapHelper$")
			swapper.Env = append(os.Environ(), swapHelperEnv+"="+backing)
			swapper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			// Its output to a file, not a pipe: Wait would wait for every
			// process holding the pipe (testenv's guard process too).
			logPath := filepath.Join(t.TempDir(), "swapper.log")
			helperOut, err := os.Create(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer helperOut.Close()
			swapper.Stdout, swapper.Stderr = helperOut, helperOut
			if err := swapper.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- swapper.Wait() }()
			defer func() { cancel(); <-exited }()

			// 2000 stats, from another process.
			out := runOn(t, m, "sh", "-c",
				`for i in $(seq 2000); do stat -c '%i %s' "$1" 2>/dev/null; done; exit 0`, "sh", filepath.Join(m.Target, "a"))
			seen := 0
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if line == "" {
					continue
				}
				var ino uint64
				var size int64
				if _, err := fmt.Sscan(line, &ino, &size); err != nil {
					t.Fatalf("stat printed %q: %v", line, err)
				}
				want, ok := sizes[ino]
				if !ok || want != size {
					t.Fatalf("stat through the mount: inode %d with size %d; the files are %v (inode: size)", ino, size, sizes)
				}
				seen++
			}
			select {
			case err := <-exited:
				exited <- err // for the deferred wait
				b, _ := os.ReadFile(logPath)
				t.Fatalf("the swapper stopped before the stats ended (%v): the race was not run\n%s", err, b)
			default:
			}
			if seen == 0 {
				t.Fatal("no stat of the raced name succeeded")
			}
			t.Logf("%d stats, each of one inode's own attributes", seen)
		})
	}
}

// swapHelperEnv makes TestSwapHelper swap the names a and b in the
// directory it names, until it is killed (or its parent dies), for two
// minutes at most.
const swapHelperEnv = "CLAMFUSE_TEST_SWAP_HELPER"

// TestSwapHelper is TestLookupAttrsOfOneInode's swapper, run as a process
// of its own.
func TestSwapHelper(t *testing.T) {
	dir := os.Getenv(swapHelperEnv)
	if dir == "" {
		return
	}
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); {
		if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, "a"), unix.AT_FDCWD, filepath.Join(dir, "b"), unix.RENAME_EXCHANGE); err != nil {
			t.Fatal(err)
		}
	}
}
