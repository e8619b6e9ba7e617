package fs

import (
	"os"
	"runtime"
	"sync"

	"github.com/clamfuse/clamfuse/fs/internal/fusefs"
)

// Each goroutine that waits in read(2) on /dev/fuse for the kernel's next
// request holds one of the Go runtime's processors (Ps) while it blocks.
// With as many Ps as CPUs, the idle readers of the request loop hold all
// of them on a small machine; the runtime's monitor then takes a P back
// from a blocked reader about once per request (there is no idle P), and
// keeps waking every 20 µs instead of backing off to 10 ms: measured, a
// fifth of clamfuse's CPU during cached opens and first opens on 2 CPUs
// (perf: runtime.sysmon 18 to 21% of clamfuse's samples, 7 to 11% with
// more Ps). SetProcs gives the runtime one P more for each reader that
// may wait, so that the Ps that run work stay as many as the CPUs.

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
