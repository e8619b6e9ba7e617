package cache

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stateGate is a Gate as a restarted clamfuse makes it: files up to 16
// bytes verified, signature version db.
func stateGate(t *testing.T, s Scanner, db string, log *bytes.Buffer) *Gate {
	t.Helper()
	opts := Options{MaxEntries: 64, TTL: time.Hour, VerifyMaxSize: 16}
	if log != nil {
		opts.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	g := NewGate(s, opts)
	if db != "" {
		g.SetDatabase(db)
	}
	return g
}

func rootOf(t *testing.T, dir string) RootID {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	r, err := RootOf(fd)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Verdicts of files over verify_max_size survive a restart; those of
// smaller files, of files written through the mount, and of files on
// another filesystem do not; a file changed meanwhile is scanned again.
func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	root := rootOf(t, dir)
	put := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := put("big", "a clean file over sixteen bytes")
	bad := put("bad", "an infected file: EICAR, over sixteen bytes")
	small := put("small", "clean, small")
	written := put("written", "written through the mount since it was judged")
	changed := put("changed", "changed while clamfuse was down")

	s := &fakeScanner{judge: infectedIf("EICAR")}
	g := stateGate(t, s, "db1", nil)
	for _, p := range []string{big, bad, small, written, changed} {
		g.Check(t.Context(), openFile(t, p), someone)
	}
	k := gateKey(t, g, written)
	g.Modified(k.Dev, k.Ino)
	other := gateKey(t, g, big)
	other.Dev++
	g.lru.PutSum(other, Verdict{}, 0) // a file on a filesystem mounted below the root

	path := filepath.Join(dir, "state", "mount.state")
	n, wrote, err := g.SaveState(path, root)
	if err != nil || !wrote || n != 3 {
		t.Fatalf("SaveState = %d, %v, %v; want 3 verdicts (big, bad, changed) written", n, wrote, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&0o777 != 0o600 {
		t.Errorf("state file mode %#o, %v; want 0600", st.Mode&0o777, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("state directory holds %v; want the state file alone", ents)
	}
	if _, wrote, err := g.SaveState(path, root); wrote || err != nil {
		t.Errorf("SaveState with nothing changed: wrote %v, %v; want nothing written", wrote, err)
	}

	f, err := os.OpenFile(changed, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(" (more)")
	f.Close()

	state, err := ReadState(path, root)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	s2 := &fakeScanner{judge: infectedIf("EICAR")}
	g2 := stateGate(t, s2, "db1", &log)
	g2.Restore(state)
	checkDecision(t, "big", g2.Check(t.Context(), openFile(t, big), someone), expect{allow: true, reason: ReasonClean, cached: true})
	d := g2.Check(t.Context(), openFile(t, bad), someone)
	checkDecision(t, "bad", d, expect{reason: ReasonInfected, sig: eicarSig, cached: true})
	if d.Verdict.SHA256 == "" || d.Verdict.Backend != "fake:clamd" {
		t.Errorf("restored verdict %+v; want its digest and backend", d.Verdict)
	}
	if s2.Calls() != 0 {
		t.Errorf("%d scans; want none", s2.Calls())
	}
	for _, p := range []string{small, written, changed} {
		checkDecision(t, filepath.Base(p), g2.Check(t.Context(), openFile(t, p), someone), expect{allow: true, reason: ReasonClean})
	}
	if st := g2.Stats(); s2.Calls() != 3 || st.Restored != 3 {
		t.Errorf("%d scans, Stats %+v; want 3 scans, 3 restored", s2.Calls(), st)
	}
	if !strings.Contains(log.String(), "verdicts restored from the state file") || !strings.Contains(log.String(), "restored=3") {
		t.Errorf("log %q; want the restore counted", log.String())
	}

	// Another signature version drops it all; so does an invalidation.
	log.Reset()
	s3 := &fakeScanner{}
	g3 := stateGate(t, s3, "db2", &log)
	g3.Restore(state)
	checkDecision(t, "big, new signatures", g3.Check(t.Context(), openFile(t, big), someone), expect{allow: true, reason: ReasonClean})
	if !strings.Contains(log.String(), "another signature database version") {
		t.Errorf("log %q; want the state file dropped for its version", log.String())
	}
	g4 := stateGate(t, &fakeScanner{}, "db1", nil)
	g4.Invalidate(0)
	g4.Restore(state)
	if g4.Cache().Len() != 0 {
		t.Errorf("%d verdicts restored after an invalidation; want none", g4.Cache().Len())
	}

	// No version known yet: restored once SetDatabase says it.
	s5 := &fakeScanner{}
	g5 := stateGate(t, s5, "", nil)
	g5.Restore(state)
	if _, wrote, _ := g5.SaveState(path, root); wrote {
		t.Error("SaveState wrote over a state file still waiting to be restored")
	}
	g5.SetDatabase("db1")
	checkDecision(t, "big, version known later", g5.Check(t.Context(), openFile(t, big), someone),
		expect{allow: true, reason: ReasonClean, cached: true})
	if s5.Calls() != 0 {
		t.Errorf("%d scans; want none", s5.Calls())
	}
}

// Entries past their TTL are dropped; the others keep what was left.
func TestStateExpiry(t *testing.T) {
	now := time.Now()
	root := RootID{Dev: 7, Ino: 2, Fsid: 99}
	entries := []Entry{
		{Key: Key{Dev: 7, Ino: 10, Size: 100, MtimeNs: 1, CtimeNs: 2}, TTL: 30 * time.Minute},
		{Key: Key{Dev: 7, Ino: 11, Size: 100, MtimeNs: 1, CtimeNs: 2}, TTL: 3 * time.Hour},
		{Key: Key{Dev: 7, Ino: 12, Size: 100, MtimeNs: 1, CtimeNs: 2}, Verdict: Verdict{Infected: true, Signature: "S", SHA256: "ab"}},
	}
	s, saved, err := decodeState(encodeState("db", root, now, entries), now.Add(time.Hour))
	if err != nil || saved != root {
		t.Fatalf("decodeState: %v, %+v", err, saved)
	}
	if len(s.Entries) != 3 || s.Entries[0].TTL >= 0 || s.Entries[1].TTL != 2*time.Hour || s.Entries[2].TTL != 0 ||
		s.Entries[2].Verdict != entries[2].Verdict || s.Database != "db" || !s.Saved.Equal(time.Unix(0, now.UnixNano())) {
		t.Fatalf("decoded %+v", s)
	}
	g := stateGate(t, &fakeScanner{}, "db", nil)
	g.Restore(s)
	if g.Cache().Len() != 2 || g.Stats().Restored != 2 {
		t.Errorf("%d restored; want 2 (one expired)", g.Cache().Len())
	}
	ents, _ := g.Cache().Entries()
	for _, e := range ents {
		if e.TTL > time.Hour {
			t.Errorf("%+v: TTL over cache.ttl (1h)", e)
		}
	}
}

// A state file that is corrupt, truncated, of another format, made for
// another filesystem, or open to others, is refused whole.
func TestStateNotTrusted(t *testing.T) {
	dir := t.TempDir()
	root := rootOf(t, dir)
	data := encodeState("db", root, time.Now(), []Entry{{Key: Key{Ino: 5, Size: 100, MtimeNs: 1, CtimeNs: 2}, TTL: time.Hour}})
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	good := write("good", data, 0o600)
	if s, err := ReadState(good, root); err != nil || len(s.Entries) != 1 || s.Entries[0].Key.Dev != root.Dev {
		t.Fatalf("ReadState(good) = %+v, %v", s, err)
	}
	flipped := bytes.Clone(data)
	flipped[len(stateMagic)+3] ^= 1
	foreign := root
	foreign.Ino++
	moved := root
	moved.Dev++
	tests := []struct {
		name string
		path string
		root RootID
		want string
	}{
		{"corrupt", write("flipped", flipped, 0o600), root, "checksum mismatch"},
		{"truncated", write("short", data[:len(data)-5], 0o600), root, "checksum mismatch"},
		{"empty", write("empty", nil, 0o600), root, "not a clamfuse state file"},
		{"foreign", good, foreign, "made for another filesystem"},
		{"readable by others", write("open", data, 0o644), root, "others may read or change it"},
		{"not a file", dir, root, "not a regular file"},
	}
	for _, tt := range tests {
		_, err := ReadState(tt.path, tt.root)
		if !errors.Is(err, ErrStateNotTrusted) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want not trusted: %s", tt.name, err, tt.want)
		}
	}
	if s, err := ReadState(good, moved); root.Fsid != 0 && (err != nil || s.Entries[0].Key.Dev != moved.Dev) {
		t.Errorf("same filesystem under another device number: %+v, %v; want its entries on the new device", s, err)
	}
	if _, err := ReadState(filepath.Join(dir, "none"), root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v; want ErrNotExist", err)
	}
	if err := os.Symlink(good, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(filepath.Join(dir, "link"), root); err == nil {
		t.Error("a symlink to a state file was followed")
	}

	// Another version of the format, with a valid checksum.
	v2 := bytes.Clone(data[:len(data)-32])
	v2[len(stateMagic)] = 2
	sum := sha256Sum(v2)
	_, _, err := decodeState(append(v2, sum[:]...), time.Now())
	if err == nil || !strings.Contains(err.Error(), "format version 2") {
		t.Errorf("format version 2: %v", err)
	}
}

// FuzzDecodeState: whatever the body (with a checksum that matches), the
// decoder returns an error or entries a scan could make; it never
// panics.
func FuzzDecodeState(f *testing.F) {
	now := time.Unix(1700000000, 0)
	f.Add(encodeState("ClamAV 1.4.6/27000", RootID{1, 2, 3}, now, []Entry{
		{Key: Key{Ino: 5, Size: 100, MtimeNs: 1, CtimeNs: 2}, TTL: time.Hour},
		{Key: Key{Ino: 6, Size: 1 << 30}, Verdict: Verdict{Infected: true, Signature: "Sig", Backend: "unix:/s", SHA256: "00"}},
	})[len(stateMagic) : len(stateMagic)+60])
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 255, 255, 255, 255, 1})
	f.Fuzz(func(t *testing.T, body []byte) {
		b := append([]byte(stateMagic), body...)
		sum := sha256Sum(b)
		s, _, err := decodeState(append(b, sum[:]...), now)
		if err != nil {
			return
		}
		for _, e := range s.Entries {
			if e.Key.Size <= 0 || e.Verdict.Infected != (e.Verdict.Signature != "") {
				t.Fatalf("decoded an entry no scan makes: %+v", e)
			}
		}
	})
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// BenchmarkStateFile writes and reads back a state file of 100 000
// verdicts, the default cache.max_entries.
func BenchmarkStateFile(b *testing.B) {
	dir := b.TempDir()
	root := RootID{Dev: 42, Ino: 2, Fsid: 7}
	g := NewGate(&fakeScanner{}, Options{MaxEntries: 100000, TTL: 24 * time.Hour, VerifyMaxSize: 1 << 20})
	g.SetDatabase("ClamAV 1.4.6/27500/Mon Dec  1 09:00:00 2026")
	for i := range 100000 {
		g.lru.PutSum(Key{Dev: 42, Ino: uint64(1000 + i), Size: 2<<20 + int64(i), MtimeNs: 1764000000000000000 + int64(i)*1e6,
			CtimeNs: 1764000000000000000 + int64(i)*1e6, DB: g.Database()}, Verdict{Backend: "unix:/run/clamav/clamd.ctl"}, 0)
	}
	path := filepath.Join(dir, "s.state")
	b.Run("save", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			g.lru.PutSum(Key{Dev: 42, Ino: 1000, Size: 2 << 20, MtimeNs: 1764000000000000000, CtimeNs: 1764000000000000000,
				DB: g.Database()}, Verdict{Backend: "unix:/run/clamav/clamd.ctl"}, 0) // a change, or the save is skipped
			if n, wrote, err := g.SaveState(path, root); err != nil || !wrote || n != 100000 {
				b.Fatalf("SaveState = %d, %v, %v", n, wrote, err)
			}
		}
		if fi, err := os.Stat(path); err == nil {
			b.ReportMetric(float64(fi.Size()), "file-bytes")
		}
	})
	b.Run("read+restore", func(b *testing.B) {
		for b.Loop() {
			s, err := ReadState(path, root)
			if err != nil {
				b.Fatal(err)
			}
			g2 := NewGate(&fakeScanner{}, Options{MaxEntries: 100000, TTL: 24 * time.Hour, VerifyMaxSize: 1 << 20})
			g2.SetDatabase(g.Database())
			g2.Restore(s)
			if g2.Cache().Len() != 100000 {
				b.Fatalf("%d restored", g2.Cache().Len())
			}
		}
	})
}
