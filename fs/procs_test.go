package fs

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// procsHelperEnv makes TestSetProcsHelper print GOMAXPROCS after SetProcs.
const procsHelperEnv = "CLAMFUSE_TEST_PROCS_HELPER"

// TestSetProcs: SetProcs raises GOMAXPROCS by the readers that may block
// waiting for requests, and leaves a GOMAXPROCS set in the environment
// alone. Each case runs in a process of its own (SetProcs acts once per
// process, and GOMAXPROCS is read at start).
func TestSetProcs(t *testing.T) {
	for _, tc := range []struct {
		env  string // GOMAXPROCS in the environment, "" for none
		want func(base int) int
	}{
		{"", func(base int) int { return base + fusefs.IdleReaders() }},
		{"3", func(int) int { return 3 }},
	} {
		t.Run("GOMAXPROCS="+tc.env, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSetProcsHelper$")
			env := []string{procsHelperEnv + "=1"}
			for _, e := range os.Environ() {
				if !strings.HasPrefix(e, "GOMAXPROCS=") {
					env = append(env, e)
				}
			}
			if tc.env != "" {
				env = append(env, "GOMAXPROCS="+tc.env)
			}
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			var before, after int
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) == 3 && f[0] == "procs" {
					before, _ = strconv.Atoi(f[1])
					after, _ = strconv.Atoi(f[2])
				}
			}
			if before == 0 {
				t.Fatalf("no procs line in the helper's output:\n%s", out)
			}
			if want := tc.want(before); after != want {
				t.Errorf("GOMAXPROCS %d before SetProcs, %d after; want %d", before, after, want)
			}
		})
	}
}

// TestSetProcsHelper prints GOMAXPROCS before and after SetProcs when
// TestSetProcs runs it; otherwise it does nothing.
func TestSetProcsHelper(t *testing.T) {
	if os.Getenv(procsHelperEnv) == "" {
		return
	}
	before := runtimeProcs()
	SetProcs()
	SetProcs() // once per process
	os.Stdout.WriteString("procs " + strconv.Itoa(before) + " " + strconv.Itoa(runtimeProcs()) + "\n")
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
