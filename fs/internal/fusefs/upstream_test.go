package fusefs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// upstreamLoop is the request loop of upstream's Serve, which the marked
// block of serve.go replaces.
const upstreamLoop = `	for {
		req, err := s.conn.ReadRequest()
		if err != nil {
			if err == io.EOF {
				break
			}
			return err
		}

		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(req)
		}()
	}
	return nil
}
`

const (
	upstreamHeader = "// FUSE service loop, for servers that wish to use it.\n\npackage fs // import \"bazil.org/fuse/fs\"\n"
	beginMarker    = "\t// clamfuse: begin request loop\n"
	endMarker      = "// clamfuse: end request loop\n"
	// The readdir block is a pure addition: upstream has nothing there.
	beginReaddir = "\t\t// clamfuse: begin readdir\n"
	endReaddir   = "\t\t// clamfuse: end readdir\n"
)

// TestSameAsUpstream checks that serve.go is bazil.org/fuse/fs/serve.go of
// the version go.mod pins, but for its header and the marked block.
func TestSameAsUpstream(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "bazil.org/fuse").Output()
	if err != nil {
		t.Fatalf("go list -m bazil.org/fuse: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	upstream, err := os.ReadFile(filepath.Join(dir, "fs", "serve.go"))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile("serve.go")
	if err != nil {
		t.Fatal(err)
	}

	o := string(ours)
	if b, e := strings.Index(o, beginReaddir), strings.Index(o, endReaddir); b >= 0 && e > b {
		o = o[:b] + o[e+len(endReaddir):]
	} else {
		t.Fatalf("serve.go: the %q and %q markers are missing", beginReaddir, endReaddir)
	}
	begin, end := strings.Index(o, beginMarker), strings.Index(o, endMarker)
	if begin < 0 || end < begin {
		t.Fatalf("serve.go: the %q and %q markers are missing", beginMarker, endMarker)
	}
	header := strings.Index(o, "\npackage fusefs\n")
	if header < 0 {
		t.Fatal(`serve.go: no "package fusefs" clause`)
	}

	u := string(upstream)
	for _, part := range []string{upstreamHeader, upstreamLoop} {
		if strings.Count(u, part) != 1 {
			t.Fatalf("upstream %s/fs/serve.go changed: this text is not in it once:\n%s\nredo the copy (see doc.go)", dir, part)
		}
	}
	want := strings.Replace(u, upstreamHeader, o[:header+len("\npackage fusefs\n")], 1)
	want = strings.Replace(want, upstreamLoop, o[begin:end+len(endMarker)], 1)
	if want != o {
		t.Errorf("serve.go differs from upstream %s/fs/serve.go outside the clamfuse markers; redo the copy (see doc.go)", dir)
	}
}
