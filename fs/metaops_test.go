package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// runAs runs a shell command against the mount m from another process,
// as uid (gid the same; 0 for root), within a minute.
func runAs(t testing.TB, m *Mounted, uid uint32, script string) {
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
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

// BenchmarkMetadataRoundTrips (issue #12) counts the FUSE requests of
// `ls -lR` and `find | xargs stat` on a tree of 2000 files (20 directories
// of 100), cold (the kernel's caches dropped) and warm, as root and as
// another user, with READDIRPLUS (auto) and without; it reports requests
// per file, and logs each request type (-v). It is a measurement, not a
// test: anything on the machine that drops the kernel's caches meanwhile
// (drop_caches, memory pressure) adds LOOKUPs and ACL reads to the warm
// figures. README's Performance section says what each request is for.
//
//	go test -run - -bench MetadataRoundTrips -benchtime 1x -v ./fs/
func BenchmarkMetadataRoundTrips(b *testing.B) {
	const dirs, per = 20, 100
	const files = dirs * per
	for _, mode := range []ReaddirPlus{ReaddirPlusAuto, ReaddirPlusOff} {
		b.Run("readdirplus="+mode.String(), func(b *testing.B) {
			backing, m, seen := testMount(b, MountOptions{AllowOther: true, FS: Options{ReaddirPlus: mode,
				AttrValid: time.Second, EntryValid: time.Second, Invalidation: true, WatchedValid: time.Hour}})
			// Let the other user reach the mount and the tree.
			for _, p := range []string{backing, m.Target, filepath.Dir(m.Target)} {
				if err := os.Chmod(p, 0o755); err != nil {
					b.Fatal(err)
				}
			}
			for d := range dirs {
				dir := filepath.Join(backing, fmt.Sprintf("d%02d", d))
				if err := os.Mkdir(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				for f := range per {
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), nil, 0o644); err != nil {
						b.Fatal(err)
					}
				}
			}
			for range b.N {
				for _, w := range []struct{ name, script string }{
					{"ls-lR", "ls -lR --color=never " + m.Target + " >/dev/null"},
					{"find-stat", "find " + m.Target + " -type f | xargs stat >/dev/null"},
				} {
					for _, who := range []uint32{0, 65534} {
						if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
							b.Fatalf("drop_caches: %v", err)
						}
						seen.takeOps()
						runAs(b, m, who, w.script)
						cold := seen.takeOps()
						runAs(b, m, who, w.script)
						warm := seen.takeOps()
						b.Logf("%s as uid %d on %d files: cold %v", w.name, who, files, cold)
						b.Logf("%s as uid %d on %d files: warm %v", w.name, who, files, warm)
						b.ReportMetric(float64(total(cold))/files, fmt.Sprintf("req/file-%s-uid%d-cold", w.name, who))
						b.ReportMetric(float64(total(warm))/files, fmt.Sprintf("req/file-%s-uid%d-warm", w.name, who))
					}
				}
			}
		})
	}
}

// total is the number of requests in ops, FORGETs left out.
func total(ops map[string]int) int {
	n := 0
	for op, k := range ops {
		if op != "ForgetRequest" && op != "BatchForgetRequest" {
			n += k
		}
	}
	return n
}

// TestLsAsksLabelOnce: `ls -l` asks for the SELinux label of every file
// it lists (security.selinux, which the kernel never caches for FUSE);
// clamfuse answers a missing label EOPNOTSUPP, as a filesystem without
// labels, and ls stops asking for the rest of the mount (issue #12: it
// was one round trip per file, most of `ls -lR`'s requests).
func TestLsAsksLabelOnce(t *testing.T) {
	const files = 50
	backing, m, seen := testMount(t, MountOptions{FS: Options{AttrValid: time.Second, EntryValid: time.Second}})
	for i := range files {
		if err := os.WriteFile(filepath.Join(backing, fmt.Sprintf("f%02d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seen.takeOps()
	runAs(t, m, 0, "ls -lR --color=never "+m.Target+" >/dev/null")
	ops := seen.takeOps()
	if got := ops["GetxattrRequest "+selinuxLabel]; got < 1 || got > 2 {
		t.Errorf("ls -lR of %d files asked for %s %d times, want once (twice at most): %v", files, selinuxLabel, got, ops)
	}
}
