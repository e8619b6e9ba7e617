package cache

import (
	"os"
	"testing"
)

// TestMain runs the tests with no racy window for devices whose
// granularity no test reported: they write files and open them at once,
// and the tests of the racy rule set the granularity of their own
// (SetTimeGranularity).
func TestMain(m *testing.M) {
	unknownWindow = 0
	os.Exit(m.Run())
}
