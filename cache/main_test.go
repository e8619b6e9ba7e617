package cache

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain runs the tests with no racy window for devices whose
// granularity no test reported: they write files and open them at once,
// and the tests of the racy rule set the granularity of their own
// (SetTimeGranularity).
//
// Run with CLAMFUSE_TEST_TRUNC_RDONLY=PATH (as another user, see
// lease_attack_test.go), the test binary only opens PATH with
// O_RDONLY|O_TRUNC and exits: 0 when that open succeeded.
func TestMain(m *testing.M) {
	if p := os.Getenv("CLAMFUSE_TEST_TRUNC_RDONLY"); p != "" {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		unix.Close(fd)
		os.Exit(0)
	}
	unknownWindow = 0
	os.Exit(m.Run())
}
