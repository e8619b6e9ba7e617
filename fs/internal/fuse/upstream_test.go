package fuse

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	// Keeps the pinned upstream in go.mod (go mod tidy), which
	// TestSameAsUpstream compares this copy with.
	_ "bazil.org/fuse"

	"github.com/clamfuse/clamfuse/fs/internal/upstream"
)

// replaced records, for each copied file with marked blocks, the upstream
// text each block replaces. A file not named here is upstream's verbatim.
var replaced = map[string]map[string]string{
	"fuse.go": {
		"sticky":            "",
		"unix time":         "\tnano := t.UnixNano()\n\tsec = uint64(nano / 1e9)\n\tnsec = uint32(nano % 1e9)\n",
		"conn":              "",
		"opcodes":           "",
		"rename flags":      "",
		"open backing id":   "",
		"create backing id": "",
		"open response":     "",
		// A READ's reply sent from the buffer its data was read into
		// (clamfuse_read.go).
		"read in place field":   "",
		"read in place respond": "",
		"read buffer": `	m := getMessage(c)
	c.rio.RLock()
	n, err := syscall.Read(c.fd(), m.buf)
	c.rio.RUnlock()
`,
		"put message": `	m.buf = m.buf[:bufSize]
	m.conn = nil
	m.off = 0
	reqPool.Put(m)
`,
		"init reply": `	c.flags = r.Flags & (InitBigWrites | InitParallelDirOps | conf.initFlags)
	s := &initResponse{
		Library:             proto,
		MaxReadahead:        conf.maxReadahead,
		Flags:               c.flags,
		MaxBackground:       conf.maxBackground,
		CongestionThreshold: conf.congestionThreshold,
		MaxWrite:            maxWrite,
	}
	r.Respond(s)
`,
	},
	"fuse_linux.go": {
		"max write": "const maxWrite = 128 * 1024\n",
	},
	"fuse_kernel.go": {
		"protocol minor":  "\tprotoVersionMaxMinor = 33\n",
		"backing id":      "\t_         uint32\n",
		"open flag names": "",
		"init flags":      "",
		"init flags2":     "",
		"init flag names": "",
	},
	"options.go": {
		"mount config":       "",
		"request init flags": "",
	},
	"fuseutil/fuseutil.go": {
		"import": "\t\"bazil.org/fuse\"\n",
	},
}

// copied reports whether upstream's root-package file name is copied here:
// every non-test .go file but FreeBSD's (clamfuse runs on Linux only).
func copied(name string) bool {
	return strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go") &&
		!strings.HasSuffix(name, "_freebsd.go")
}

// ours reports whether name is a file of this package that is clamfuse's
// own, not a copy: doc.go, tests, and clamfuse_*.go, which hold the code
// the marked blocks call (so the blocks stay small).
func ours(name string) bool {
	return name == "doc.go" || strings.HasSuffix(name, "_test.go") ||
		(strings.HasPrefix(name, "clamfuse_") && strings.HasSuffix(name, ".go"))
}

// TestSameAsUpstream checks that this package is bazil.org/fuse's root
// package, and fuseutil/ its fuseutil, at the version go.mod pins, changed
// only in their marked blocks, with nothing added but clamfuse's own files
// (see ours).
func TestSameAsUpstream(t *testing.T) {
	dir := upstream.ModuleDir(t, "bazil.org/fuse")

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"LICENSE", "fuseutil/fuseutil.go"}
	for _, e := range ents {
		if copied(e.Name()) {
			want = append(want, e.Name())
		}
	}
	var have []string
	for _, sub := range []string{".", "fuseutil"} {
		ents, err := os.ReadDir(sub)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			n := filepath.ToSlash(filepath.Join(sub, e.Name()))
			if e.IsDir() || ours(n) {
				continue
			}
			have = append(have, n)
		}
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(have, want) {
		t.Errorf("the copied files are\n\t%q\nbut upstream %s has\n\t%q\nredo the copy (see doc.go)", have, dir, want)
	}

	for name := range replaced {
		if !slices.Contains(want, name) {
			t.Errorf("replaced names %s, which is not a copied file", name)
		}
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			upstream.Check(t, filepath.Join(dir, name), name, replaced[name])
		})
	}
}
