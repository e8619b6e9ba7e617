package cache

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// An excluded user's opens are allowed without asking the cache or
// clamd, and leave nothing in the cache: another user's open of the same
// file is scanned, and a file cached infected is still allowed to them.
func TestGateExcludeUIDs(t *testing.T) {
	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := NewGate(s, Options{MaxEntries: 16})
	g.SetPolicy(Policy{ExcludeUIDs: map[uint32]bool{34: true}})
	backup := Opener{Path: "f", Pid: 1, Uid: 34}
	p := writeFile(t, "EICAR")

	checkDecision(t, "excluded", g.Check(t.Context(), openFile(t, p), backup), expect{allow: true, reason: ReasonExcludedUID})
	checkDecision(t, "excluded, uncached", g.CheckUncached(t.Context(), openFile(t, p), backup), expect{allow: true, reason: ReasonExcludedUID})
	if n, l := s.Calls(), g.Cache().Len(); n != 0 || l != 0 {
		t.Fatalf("%d scans, %d cached; want none: an excluded opener neither scans nor caches", n, l)
	}
	checkDecision(t, "someone else", g.Check(t.Context(), openFile(t, p), someone), expect{reason: ReasonInfected, sig: eicarSig})
	checkDecision(t, "excluded again", g.Check(t.Context(), openFile(t, p), backup), expect{allow: true, reason: ReasonExcludedUID})
	checkDecision(t, "someone else again", g.Check(t.Context(), openFile(t, p), someone),
		expect{reason: ReasonInfected, sig: eicarSig, cached: true})
	if st := g.Stats(); st.Excluded != 3 || st.Hits != 1 || st.Misses != 1 || s.Calls() != 1 {
		t.Errorf("Stats %+v, %d scans; want 3 excluded, 1 hit, 1 miss, 1 scan", st, s.Calls())
	}
}

// A program counts by the path its process runs and by the file found
// there when the policy was made: the same path with another file there
// does not count, and is logged.
func TestGateExcludeExe(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, weak, err := ResolveExe(self)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the test binary %s: %+v (weak: %q)", self, exe, weak)
	var buf bytes.Buffer
	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := NewGate(s, Options{MaxEntries: 16, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	p := writeFile(t, "EICAR")

	g.SetPolicy(Policy{ExcludeExes: []Exe{exe}})
	me := Opener{Path: "f", Pid: uint32(os.Getpid()), Uid: 1000}
	checkDecision(t, "this process", g.Check(t.Context(), openFile(t, p), me), expect{allow: true, reason: ReasonExcludedExe})

	// A thread: the FUSE request names the thread that opened.
	runtime.LockOSThread()
	tid := unix.Gettid()
	runtime.UnlockOSThread()
	me.Pid = uint32(tid)
	checkDecision(t, "a thread of it", g.Check(t.Context(), openFile(t, p), me), expect{allow: true, reason: ReasonExcludedExe})
	if s.Calls() != 0 || g.Cache().Len() != 0 {
		t.Fatalf("%d scans, %d cached; want none", s.Calls(), g.Cache().Len())
	}

	replaced := exe
	replaced.Ino++
	g.SetPolicy(Policy{ExcludeExes: []Exe{replaced}, LogRepeat: 0})
	checkDecision(t, "the path, another file", g.Check(t.Context(), openFile(t, p), me), expect{reason: ReasonInfected, sig: eicarSig})
	if !strings.Contains(buf.String(), "is not the file found there") || !strings.Contains(buf.String(), "exe="+self) {
		t.Errorf("log %q; want a WARN about the program replaced", buf.String())
	}

	for _, o := range []Opener{{Pid: 0}, {Pid: 1 << 30}} {
		g.SetPolicy(Policy{ExcludeExes: []Exe{exe}})
		checkDecision(t, "no such process", g.Check(t.Context(), openFile(t, p), o), expect{reason: ReasonInfected, sig: eicarSig, cached: true})
	}
}

func TestResolveExe(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("prog", link); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(prog, &st); err != nil {
		t.Fatal(err)
	}
	e, _, err := ResolveExe(link)
	if err != nil || e.Path != link || e.Real != prog || e.Dev != st.Dev || e.Ino != st.Ino {
		t.Errorf("ResolveExe(symlink) = %+v, %v; want %s, inode %d", e, err, prog, st.Ino)
	}
	if err := os.Chmod(prog, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, weak, err := ResolveExe(prog); err != nil || !strings.Contains(weak, "writable by others") && !strings.Contains(weak, "owned by uid") {
		t.Errorf("ResolveExe(mode 777) weak %q, %v; want a reason not to trust it", weak, err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), dir} {
		if e, _, err := ResolveExe(bad); err == nil || e.Real != "" {
			t.Errorf("ResolveExe(%s) = %+v, %v; want an error and nothing to match", bad, e, err)
		}
	}
}
