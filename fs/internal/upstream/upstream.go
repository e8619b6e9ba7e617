// Package upstream checks that a file copied from a Go module (bazil.org/fuse,
// into fs/internal/fuse and fs/internal/fusefs) is the module's file at the
// version go.mod pins, changed only in marked blocks:
//
//	// clamfuse: begin NAME
//	...our lines...
//	// clamfuse: end NAME
//
// Each block is whole lines, the marker lines included, and replaces a
// recorded piece of upstream text (whole lines too). A block whose
// recorded text is empty is a pure addition, and owns the blank line
// before it if there is one (gofmt wants one between top-level
// declarations, and upstream has only one). The copy is right when putting the recorded upstream text
// back in place of every block gives upstream's file exactly; so a version
// bump that changes upstream anywhere, inside a replaced piece or outside,
// fails until the copy is redone.
//
// It is used only by tests.
package upstream

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ModuleDir returns the directory of module path at the version go.mod
// pins.
func ModuleDir(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", path).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", path, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("go list -m %s: module not downloaded", path)
	}
	return dir
}

var marker = regexp.MustCompile(`^[ \t]*// clamfuse: (begin|end) (\S.*)$`)

// Restore returns ours with each marked block replaced by its upstream
// text from replaced (block name to text). It is an error if a block is
// not closed, nested, repeated, or not in replaced, or if replaced names a
// block that ours lacks.
func Restore(ours string, replaced map[string]string) (string, error) {
	var b strings.Builder
	seen := map[string]bool{}
	open := ""
	for n, line := range strings.SplitAfter(ours, "\n") {
		m := marker.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
		switch {
		case m == nil:
			if open == "" {
				b.WriteString(line)
			}
		case m[1] == "begin":
			if open != "" {
				return "", fmt.Errorf("line %d: block %q begins inside block %q", n+1, m[2], open)
			}
			if seen[m[2]] {
				return "", fmt.Errorf("line %d: block %q appears twice", n+1, m[2])
			}
			text, ok := replaced[m[2]]
			if !ok {
				return "", fmt.Errorf("line %d: block %q: the upstream text it replaces is not recorded in the test", n+1, m[2])
			}
			seen[m[2]] = true
			open = m[2]
			if text == "" && strings.HasSuffix(b.String(), "\n\n") {
				restored := strings.TrimSuffix(b.String(), "\n")
				b.Reset()
				b.WriteString(restored)
			}
			b.WriteString(text)
		default: // end
			if open != m[2] {
				return "", fmt.Errorf("line %d: end of block %q, but the open block is %q", n+1, m[2], open)
			}
			open = ""
		}
	}
	if open != "" {
		return "", fmt.Errorf("block %q never ends", open)
	}
	for name := range replaced {
		if !seen[name] {
			return "", fmt.Errorf("block %q is recorded in the test but not in the file", name)
		}
	}
	return b.String(), nil
}

// Check fails t unless the file ours is the file upstream but for the marked
// blocks, each of which replaces the upstream text recorded in replaced.
func Check(t testing.TB, upstream, ours string, replaced map[string]string) {
	t.Helper()
	u, err := os.ReadFile(upstream)
	if err != nil {
		t.Errorf("upstream: %v", err)
		return
	}
	o, err := os.ReadFile(ours)
	if err != nil {
		t.Errorf("the copy: %v", err)
		return
	}
	restored, err := Restore(string(o), replaced)
	if err != nil {
		t.Errorf("%s: %v", ours, err)
		return
	}
	if restored == string(u) {
		return
	}
	// Name the first line that differs, to find it quickly.
	rl, ul := strings.SplitAfter(restored, "\n"), strings.SplitAfter(string(u), "\n")
	i := 0
	for i < len(rl) && i < len(ul) && rl[i] == ul[i] {
		i++
	}
	get := func(l []string, i int) string {
		if i < len(l) && (i < len(l)-1 || l[i] != "") {
			return strings.TrimSuffix(l[i], "\n")
		}
		return "(end of file)"
	}
	t.Errorf("%s differs from upstream %s outside its clamfuse blocks, or upstream changed the text a block replaces;\n"+
		"with the blocks replaced by the recorded upstream text, line %d is\n\t%q\nbut upstream's is\n\t%q\n"+
		"redo the copy (see doc.go)", ours, filepath.Clean(upstream), i+1, get(rl, i), get(ul, i))
}
