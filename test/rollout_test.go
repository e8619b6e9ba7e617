package test

// End-to-end tests of rolling clamfuse out (issue #13): audit mode and
// the allow lists switched by SIGHUP, opens by excluded users and
// programs, log lines that repeat, and verdicts kept across restarts in
// the state file. One clamd serves every subtest, behind a Proxy that
// counts scans; the subtests run one after the other (the last changes
// clamd's signature version).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

func TestRollout(t *testing.T) {
	t.Parallel()
	mounttest.Require(t)
	c := clamdtest.New(t, clamdtest.Options{})
	proxy := clamdtest.NewProxy(t, c)
	t.Run("audit_and_allow_lists", func(t *testing.T) { rolloutAudit(t, c) })
	t.Run("excluded_openers", func(t *testing.T) { rolloutExcluded(t, proxy) })
	t.Run("state_file", func(t *testing.T) { rolloutState(t, c, proxy) })
}

func sha256hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// reloadWith writes cfg as m's config file and has clamfuse reload it.
func reloadWith(t *testing.T, m *mounttest.Mount, cfg string) {
	t.Helper()
	n := len(m.Log.Lines("configuration reloaded"))
	putFile(t, opsConfigPath(t, m), []byte(cfg))
	mustDo(t, m.Signal(syscall.SIGHUP))
	m.WaitLogLinesAfter(t, opsBound, n, "configuration reloaded")
}

// rolloutAudit: in audit mode an infected file is read, logged and
// counted, with its audit line and no quarantine; SIGHUP switches to
// enforce with allow lists (by digest, by signature), then without them,
// and the file is denied and quarantined. A denial repeated in a loop is
// logged once per log.repeat_interval, with the count.
func rolloutAudit(t *testing.T, c *clamdtest.Clamd) {
	qdir := filepath.Join(t.TempDir(), "quarantine")
	mounttest.MustMkdir(t, qdir)
	addr := opsFreePort(t)
	base := fmt.Sprintf("[clamd]\naddress = %q\n[metrics]\nlisten = %q\n[log]\nrepeat_interval = \"1s\"\n", c.Address(), addr)
	quarantine := fmt.Sprintf("[actions]\nquarantine_dir = %q\n", qdir)
	m := mounttest.Start(t, mounttest.Options{Config: base + quarantine + "[scan]\nmode = \"audit\"\n"})
	m.WaitLogLines(t, opsBound, "level=WARN", "scan.mode is audit")
	marker := append([]byte("a false positive: "), clamdtest.Marker()...)
	clamExe, err := os.ReadFile(clamdtest.ClamExePath)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"eicar.com": clamdtest.EICAR(), "fp.txt": marker, "clam.exe": clamExe} {
		putFile(t, m.Backing(name), data)
		waitTimesOld(t, m.Backing(name), fineSettle)
	}

	opsWantRead(t, m, m.Path("eicar.com"), clamdtest.EICAR())
	opsWantRead(t, m, m.Path("eicar.com"), clamdtest.EICAR())
	sum := sha256hex(clamdtest.EICAR())
	m.WaitLogLines(t, opsBound, "level=WARN", `msg="infected file allowed (audit mode)"`, "path=eicar.com", "sha256="+sum)
	m.WaitLogLines(t, opsBound, "msg=detection", "path=eicar.com", `action="allowed (audit mode)"`)
	if _, err := os.Stat(m.Backing("eicar.com")); err != nil {
		t.Fatalf("audit mode moved the file: %v", err)
	}

	// Enforce, with allow lists (and no quarantine, so that clam.exe stays).
	reloadWith(t, m, base+fmt.Sprintf("[scan]\nmode = \"enforce\"\nallow_sha256 = [%q]\nallow_signatures = [%q]\n",
		strings.ToUpper(sum), clamdtest.MarkerSignature))
	m.WaitLogLines(t, opsBound, "configuration reloaded", "scan.mode", "scan.allow_sha256", "scan.allow_signatures")
	m.WaitLogLines(t, opsBound, "level=INFO", "scan.mode is enforce")
	opsWantRead(t, m, m.Path("eicar.com"), clamdtest.EICAR())
	m.WaitLogLines(t, opsBound, "level=WARN", `msg="infected file allowed by scan.allow_sha256"`, "path=eicar.com")
	opsWantRead(t, m, m.Path("fp.txt"), marker)
	m.WaitLogLines(t, opsBound, "level=WARN", `msg="infected file allowed by scan.allow_signatures"`, "path=fp.txt",
		"signature="+clamdtest.MarkerSignature)

	// A denial in a loop: few lines, and every open counted in them.
	const opens = 20
	for range opens {
		opsWantErrno(t, m, m.Path("clam.exe"), syscall.EACCES)
	}
	denied := func() (lines, total int) {
		for _, l := range m.Log.Lines(`msg="infected file denied`) {
			if !strings.Contains(l, "path=clam.exe ") {
				continue
			}
			lines++
			if !strings.Contains(l, `msg="infected file denied (repeated)"`) {
				total++ // else the line only counts those left out
			}
			if s := regexp.MustCompile(`suppressed=(\d+)`).FindStringSubmatch(l); s != nil {
				n, _ := strconv.Atoi(s[1])
				total += n
			}
		}
		return lines, total
	}
	eventually(t, 10*time.Second, "every denial counted in the log", func() bool { _, total := denied(); return total == opens })
	if lines, _ := denied(); lines >= opens/2 {
		t.Errorf("%d lines for %d denials of one file within seconds; want them collapsed", lines, opens)
	}

	// Enforce alone, with a quarantine: denied, and now quarantined.
	reloadWith(t, m, base+quarantine)
	opsWantErrno(t, m, m.Path("eicar.com"), syscall.EACCES)
	m.WaitLogLines(t, opsBound, "msg=detection", "path=eicar.com", `action="quarantined to `)
	if _, err := os.Stat(m.Backing("eicar.com")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("denied in enforce mode: %v; want the file quarantined", err)
	}

	s := opsScrape(t, "http://"+addr+"/metrics")
	for k, want := range map[string]float64{
		`clamfuse_opens_total{decision="allow",reason="audit-infected"}`:    2,
		`clamfuse_opens_total{decision="allow",reason="allowed-sha256"}`:    1,
		`clamfuse_opens_total{decision="allow",reason="allowed-signature"}`: 1,
		`clamfuse_opens_total{decision="deny",reason="infected"}`:           opens + 1,
		`clamfuse_scans_total{result="infected"}`:                           3,
		`clamfuse_detections_total`:                                         3, // audit, clam.exe, quarantine
		`clamfuse_quarantined_total`:                                        1,
	} {
		if got := s[k]; got != want {
			t.Errorf("%s = %v; want %v", k, got, want)
		}
	}
	if s[`clamfuse_log_suppressed_total`] < opens/2 {
		t.Errorf("clamfuse_log_suppressed_total = %v; want most of %d", s[`clamfuse_log_suppressed_total`], opens)
	}
}

// runAs runs argv as cred (nil: root), bounded by m.Within; it returns
// stdout and the error.
func runAs(t *testing.T, m *mounttest.Mount, cred *syscall.Credential, argv ...string) ([]byte, error) {
	t.Helper()
	var out []byte
	var err error
	m.Within(t, 30*time.Second, strings.Join(argv, " "), func() {
		cmd := exec.Command(argv[0], argv[1:]...)
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
	})
	return out, err
}

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// rolloutExcluded: a user in exclude_uids and a program in exclude_exe
// read an infected file unscanned, leaving nothing in the cache; anyone
// else is denied. A program replaced at the excluded path does not count
// until a reload.
func rolloutExcluded(t *testing.T, proxy *clamdtest.Proxy) {
	u := newTestUser(t)
	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(bin, "agent")
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, cat, agent, 0o755)
	cfg := fmt.Sprintf("[clamd]\naddress = %q\n[mount]\nallow_other = true\n[scan]\nexclude_uids = [%d]\nexclude_exe = [%q]\n",
		proxy.Address(), u.uid, agent)
	m := mounttest.Start(t, mounttest.Options{Config: cfg})
	traversableByAll(t, m.Target)
	putFile(t, m.Backing("eicar.com"), clamdtest.EICAR())
	if err := os.Chmod(m.Backing("eicar.com"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitTimesOld(t, m.Backing("eicar.com"), fineSettle)
	p := m.Path("eicar.com")

	scans := proxy.Scans()
	wantScans := func(what string, n int) {
		t.Helper()
		if got := proxy.Scans() - scans; got != n {
			t.Errorf("%s: %d scans; want %d", what, got, n)
		}
	}
	if out, err := runAs(t, m, u.cred, "cat", p); err != nil || !bytes.Equal(out, clamdtest.EICAR()) {
		t.Fatalf("cat as excluded user %s: %q, %v; want the file", u.name, out, err)
	}
	if out, err := runAs(t, m, nil, agent, p); err != nil || !bytes.Equal(out, clamdtest.EICAR()) {
		t.Fatalf("excluded program: %q, %v; want the file", out, err)
	}
	wantScans("excluded opens", 0)
	if _, err := runAs(t, m, nil, "cat", p); err == nil {
		t.Fatal("cat as root: read the infected file; want it denied")
	}
	wantScans("root's open after the excluded ones", 1) // nothing was cached for it
	m.WaitLogLines(t, opsBound, `msg="infected file denied"`, "path=eicar.com", "cached=false")
	if out, err := runAs(t, m, u.cred, "cat", p); err != nil || !bytes.Equal(out, clamdtest.EICAR()) {
		t.Errorf("excluded user after a denial: %q, %v; want the file (the cache is not asked)", out, err)
	}

	// Another file at the program's path: not the one found at load.
	copyFile(t, cat, agent+".new", 0o755)
	mustDo(t, os.Rename(agent+".new", agent))
	if _, err := runAs(t, m, nil, agent, p); err == nil {
		t.Error("a program put at the excluded path after the load read the infected file")
	}
	m.WaitLogLines(t, opsBound, "level=WARN", "not the file found there", "exe="+agent)
	reloadWith(t, m, cfg)
	if out, err := runAs(t, m, nil, agent, p); err != nil || !bytes.Equal(out, clamdtest.EICAR()) {
		t.Errorf("the new program after a reload: %q, %v; want the file", out, err)
	}
	wantScans("in all", 1)
}

// rolloutState: verdicts survive a restart in the state file: a 20 MiB
// file and an infected one cost no scan after it; a file changed while
// clamfuse was down, and a small one (its contents are verified), are
// scanned. A new signature version drops them all; a corrupt file is
// ignored with a WARN.
func rolloutState(t *testing.T, c *clamdtest.Clamd, proxy *clamdtest.Proxy) {
	dir := t.TempDir()
	src, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "mnt")
	mounttest.MustMkdir(t, src)
	mounttest.MustMkdir(t, mnt)
	state := filepath.Join(dir, "state", "share.state")
	cfg := fmt.Sprintf("[clamd]\naddress = %q\n[cache]\nstate_file = %q\n", proxy.Address(), state)
	start := func() *mounttest.Mount {
		return mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: cfg})
	}
	big := pseudoRandom(20<<20, 1)
	bad := append(pseudoRandom(2<<20, 2), clamdtest.Marker()...)
	changed := pseudoRandom(2<<20, 3)
	small := []byte("small and clean")
	files := map[string][]byte{"big.bin": big, "bad.bin": bad, "changed.bin": changed, "small.txt": small}
	for name, data := range files {
		putFile(t, filepath.Join(src, name), data)
		waitTimesOld(t, filepath.Join(src, name), fineSettle)
	}
	// open reads name and counts its scans.
	open := func(m *mounttest.Mount, name string, scans int) {
		t.Helper()
		before := proxy.Scans()
		if name == "bad.bin" {
			opsWantErrno(t, m, m.Path(name), syscall.EACCES)
		} else {
			got, err := opsRead(t, m, m.Path(name))
			if err != nil || !bytes.Equal(got, files[name]) {
				t.Fatalf("read %s: %d bytes, %v; want its %d bytes", name, len(got), err, len(files[name]))
			}
		}
		if got := proxy.Scans() - before; got != scans {
			t.Errorf("open of %s: %d scans; want %d", name, got, scans)
		}
	}

	m := start()
	m.WaitLogLines(t, opsBound, "no state file yet", state)
	for name := range files {
		open(m, name, 1)
	}
	m.Teardown()
	var st unix.Stat_t
	if err := unix.Stat(state, &st); err != nil || st.Mode&0o777 != 0o600 || st.Uid != 0 {
		t.Fatalf("state file after a clean stop: %v, mode %#o, uid %d; want root's, 0600", err, st.Mode&0o777, st.Uid)
	}

	// Changed while clamfuse was down.
	changed = append(changed, "more"...)
	files["changed.bin"] = changed
	putFile(t, filepath.Join(src, "changed.bin"), changed)
	waitTimesOld(t, filepath.Join(src, "changed.bin"), fineSettle)

	m = start()
	m.WaitLogLines(t, opsBound, "verdicts restored from the state file", "restored=3")
	open(m, "big.bin", 0)
	open(m, "bad.bin", 0)
	open(m, "changed.bin", 1)
	open(m, "small.txt", 1)
	m.Teardown()

	// A new signature version: nothing restored.
	mustDo(t, c.SetDatabaseVersion(2))
	mustDo(t, c.Reload())
	m = start()
	m.WaitLogLines(t, opsBound, "state file made under another signature database version")
	open(m, "big.bin", 1)
	m.Teardown()

	// A corrupt state file: ignored, with a WARN; clamfuse serves.
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	mustDo(t, os.WriteFile(state, data, 0o600))
	m = start()
	m.WaitLogLines(t, opsBound, "level=WARN", "state file ignored", "checksum mismatch")
	open(m, "big.bin", 1)
}
