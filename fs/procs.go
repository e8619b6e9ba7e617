package fs

import (
	"os"
	"runtime"
	"sync"

	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// The goroutine that waits in read(2) on /dev/fuse for the kernel's next
// request holds one of the Go runtime's processors (Ps) while it blocks.
// With as many Ps as CPUs, when the request loop had up to four readers
// waiting, they held all of them on a small machine; the runtime's
// monitor then took a P back from a blocked reader about once per
// request (there is no idle P), and kept waking every 20 µs instead of
// backing off to 10 ms: measured, a fifth of clamfuse's CPU during cached
// opens and first opens on 2 CPUs (perf: runtime.sysmon 18 to 21% of
// clamfuse's samples, 7 to 11% with more Ps). SetProcs gives the runtime
// one P more for each reader that may wait, so that the Ps that run work
// stay as many as the CPUs. Now that one reader waits at a time
// (fusefs.IdleReaders), that is one P more: measured, the same CPU per
// cached open as four more (A/B, 6 pairs) and the same cold `ls -lR` and
// first opens, while each P costs about 0.6 MiB of resident memory
// (README, Performance).

var procsOnce sync.Once

// SetProcs raises GOMAXPROCS by the readers that may block waiting for
// requests (fusefs.IdleReaders), unless GOMAXPROCS is set in the
// environment. Once per process.
func SetProcs() {
	procsOnce.Do(func() {
		if os.Getenv("GOMAXPROCS") != "" {
			return
		}
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + fusefs.IdleReaders())
	})
}
