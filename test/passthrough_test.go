package test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestPassthroughMixedOpens (issue #12): the kernel cannot have a file
// open in passthrough and cached mode at once (the later open fails with
// EIO), so a user who chooses the flags of the first open of a file
// (O_DIRECT, O_WRONLY, a mapping) could make another user's opens fail,
// were the mode chosen per open. Two users open one file, in turns, with
// every mix of flags and shared mappings; every open succeeds and every
// read returns the file's bytes, in both modes.
func TestPassthroughMixedOpens(t *testing.T) { inPtModes(t, testPassthroughMixedOpens) }

func testPassthroughMixedOpens(t *testing.T, pm ptMode) {
	mounttest.Require(t)
	fsopBinary(t)
	a, b := newTestUser(t), newTestUser(t)
	c := clamdtest.New(t, clamdtest.Options{})
	base := openDir(t, "clamfuse-ptmix")
	src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
	mustDo(t, os.Mkdir(src, 0o755))
	mustDo(t, os.Mkdir(mnt, 0o755))
	m := startFreshMount(t, pm, c, src, mnt, "", "")
	page := samePage(0, []byte("clean page"))
	// Over 1 MiB: a read-only first open of a smaller file keeps the
	// cached mode (passthroughMinRead), and the scenarios start so.
	big := append(page, bytes.Repeat([]byte("clean tail\n"), 200000)...)

	// Each step is (user, command...); every one must succeed.
	type step struct {
		who  string
		args []string
	}
	scenarios := []struct {
		name  string
		steps []step
	}{
		{"direct first", []step{
			{"B", []string{"open", "d", "F", "rd"}},
			{"A", []string{"open", "r", "F", "r"}},
			{"A", []string{"pread", "r"}},
			{"A", []string{"open", "w", "F", "rw"}},
			{"A", []string{"mmap", "w", "PAGE"}},
			{"A", []string{"poke", "w", "0", hexOf([]byte("clean PAGE"))}},
			{"B", []string{"open", "wd", "F", "wd"}},
			{"B", []string{"open", "r", "F", "r"}},
			{"B", []string{"mmap", "r", "PAGE"}},
			{"B", []string{"pread", "r"}},
			{"B", []string{"close", "d"}},
			{"B", []string{"close", "wd"}},
			{"A", []string{"close", "w"}},
			{"A", []string{"open", "r2", "F", "r"}},
			{"A", []string{"pread", "r2"}},
			{"A", []string{"close", "r"}},
			{"A", []string{"close", "r2"}},
			{"B", []string{"close", "r"}},
		}},
		{"writer first", []step{
			{"B", []string{"open", "w", "F", "w"}},
			{"B", []string{"pwrite", "w", "0", hexOf([]byte("clean bytes"))}},
			{"A", []string{"open", "r", "F", "r"}},
			{"A", []string{"mmap", "r", "PAGE"}},
			{"A", []string{"pread", "r"}},
			{"B", []string{"open", "rwd", "F", "rwd"}},
			{"A", []string{"open", "rw", "F", "rw"}},
			{"A", []string{"mmap", "rw", "PAGE"}},
			{"A", []string{"poke", "rw", "0", hexOf([]byte("clean page"))}},
			{"B", []string{"close", "w"}},
			{"B", []string{"close", "rwd"}},
			{"A", []string{"pread", "r"}},
			{"A", []string{"close", "rw"}},
			{"A", []string{"close", "r"}},
		}},
		{"truncating opens", []step{
			{"A", []string{"open", "r", "F", "r"}},
			{"A", []string{"mmap", "r", "PAGE"}},
			{"B", []string{"open", "t", "F", "wt"}},
			{"B", []string{"pwrite", "t", "0", hexOf(page)}},
			{"A", []string{"open", "d", "F", "rd"}},
			{"A", []string{"pread", "r"}},
			{"B", []string{"close", "t"}},
			{"A", []string{"close", "d"}},
			{"A", []string{"close", "r"}},
			{"B", []string{"open", "r", "F", "r"}},
			{"B", []string{"pread", "r"}},
			{"B", []string{"close", "r"}},
		}},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			name := "f" + string(rune('0'+i))
			ownedFile(t, filepath.Join(src, name), big, a)
			mustDo(t, os.Chmod(filepath.Join(src, name), 0o666))
			sessions := map[string]*session{"A": startSession(t, "A", a.cred), "B": startSession(t, "B", b.cred)}
			for _, s := range sessions {
				s.m = m.Mount
			}
			for _, st := range sc.steps {
				args := make([]string, len(st.args))
				for i, arg := range st.args {
					args[i] = strings.NewReplacer("F", filepath.Join(mnt, name), "PAGE", strconv.Itoa(len(page))).Replace(arg)
				}
				if arg := st.args[0]; arg == "poke" || arg == "pwrite" {
					args[3] = st.args[3] // data, as is
				}
				out := sessions[st.who].must(args...)
				if args[0] == "pread" && !strings.Contains(out, "clean") {
					t.Fatalf("%s: %s: read %.80s", st.who, strings.Join(st.args, " "), out)
				}
			}
			if got := slurp(t, filepath.Join(src, name)); !strings.HasPrefix(string(got), "clean") {
				t.Errorf("the backing file holds %.40q", got)
			}
		})
	}
}
