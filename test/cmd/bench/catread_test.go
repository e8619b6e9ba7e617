package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/clamfuse/clamfuse/test/testenv"
)

// TestCatread builds catread and times reads with it as the bench does:
// every file read to its end by one or several threads gives a time;
// a file that cannot be read fails the run with a line naming it, as the
// reader who cannot open it sees it (a user's EACCES included).
func TestCatread(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Skip(t, "gcc not installed (Debian package gcc): cannot build catread")
	}
	dir := t.TempDir()
	bin, err := buildC(context.Background(), filepath.Join("..", "..", ".."), dir, catreadSource, "catread", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	var names []string
	for i := range 40 {
		name := filepath.Join("d", strings.Repeat("x", i%7+1)+string(rune('a'+i%26))+".bin")
		names = append(names, name)
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, i*40000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	private := filepath.Join("d", "private")
	if err := os.WriteFile(filepath.Join(src, private), []byte("p"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &bench{data: dataset{src: src}}
	native := &system{name: "native", kind: kindNative, b: b}

	old := catreadBin
	catreadBin = bin
	t.Cleanup(func() { catreadBin, asUser = old, nil })
	cases := []struct {
		name    string
		files   []string
		readers int
		as      *syscall.Credential
		wantErr string
	}{
		{"one reader", names, 1, nil, ""},
		{"eight readers", names, 8, nil, ""},
		{"missing file", append(names[:3:3], "d/nosuch"), 2, nil, "catread: open " + filepath.Join(src, "d/nosuch") + ": No such file or directory"},
		{"not the reader's", []string{names[0], private}, 1, &syscall.Credential{Uid: 65534, Gid: 65534}, "catread: open " + filepath.Join(src, private) + ": Permission denied"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.as != nil && os.Geteuid() != 0 {
				testenv.Skip(t, "reading as another user needs root")
			}
			asUser = c.as
			defer func() { asUser = nil }()
			wall, _, err := timeRead(context.Background(), native, c.files, c.readers)
			if c.wantErr != "" {
				if err == nil || err.Error() != c.wantErr {
					t.Fatalf("timeRead: %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || wall <= 0 {
				t.Fatalf("timeRead: %v, %v", wall, err)
			}
		})
	}
}
