package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// TestSamba exports an in-place clamfuse mount (source == target,
// allow_other) with a private smbd and uses it with smbclient as two real
// users: a clean file round-trips byte for byte, an infected upload is
// stored but cannot be downloaded (and clamfuse logs the smbd process
// that asked, with the user's uid), Samba's DOS attributes (user.DOSATTRIB)
// are stored on the backing files, Samba's locking (byte-range locks,
// share modes, an oplock and a lease) behaves as on a share of a plain
// directory (smbtorture, same smbd), a large upload renamed after its
// scan is not scanned again, and a directory of 10 000 files lists
// whole.
func TestSamba(t *testing.T) {
	mounttest.Require(t)
	requireSamba(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	u1, u2 := newTestUser(t), newTestUser(t)
	if !u1.createdByUseradd || !u2.createdByUseradd {
		t.Fatalf("Samba needs real accounts (useradd) for its users")
	}

	base := openDir(t, "clamfuse-samba")
	share := filepath.Join(base, "share")   // mounted over itself
	backing := filepath.Join(base, "back")  // the same directory, bind-mounted before
	native := filepath.Join(base, "native") // a plain share, for comparison
	for _, d := range []string{share, backing, native} {
		mustDo(t, os.Mkdir(d, 0o755))
	}
	for _, d := range []string{share, native} {
		mustDo(t, os.Chmod(d, 0o1777))
	}
	// 10 000 files made directly in the backing directory.
	const manyFiles = 10000
	mustDo(t, os.Mkdir(filepath.Join(share, "many"), 0o755))
	for i := range manyFiles {
		mustDo(t, os.WriteFile(filepath.Join(share, "many", fmt.Sprintf("f%05d.txt", i)), nil, 0o644))
	}
	// The backing directory stays reachable at back/ (a private bind
	// mount, so the FUSE mount does not propagate to it).
	mustDo(t, unix.Mount(share, backing, "", unix.MS_BIND, ""))
	t.Cleanup(func() {
		if err := unix.Unmount(backing, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount the bind mount %s: %v", backing, err)
		}
	})
	mustDo(t, unix.Mount("", backing, "", unix.MS_PRIVATE, ""))

	metricsAddr := opsFreePort(t)
	m := startChecked(t, mounttest.Options{Source: share, Target: share,
		Config: fmt.Sprintf("[metrics]\nlisten = %q\n", metricsAddr),
		Args:   []string{"--allow-other", "--clamd", clamd.Address(), "--timeout", "60s"}})
	m.WaitLogLines(t, logBound, "serving metrics", metricsAddr)
	metrics := func() map[string]float64 { return opsScrape(t, "http://"+metricsAddr+"/metrics") }
	s := startSmbd(t, filepath.Join(base, "samba"), map[string]string{"scan": share, "native": native})
	s.addUser(t, u1.name, "pw1-"+u1.name)
	s.addUser(t, u2.name, "pw2-"+u2.name)
	local := t.TempDir()

	t.Run("CleanRoundTrip", func(t *testing.T) {
		data := pseudoRandom(3<<20+17, 131)
		putFile(t, filepath.Join(local, "clean.bin"), data)
		out := s.client(t, u1.name, "scan", "put "+filepath.Join(local, "clean.bin")+" clean.bin")
		if !strings.Contains(out, "putting file") {
			t.Fatalf("upload as %s: %s", u1.name, out)
		}
		st := lstatT(t, filepath.Join(backing, "clean.bin"))
		if st.Uid != u1.uid {
			t.Errorf("uploaded file is owned by uid %d; want %s's %d", st.Uid, u1.name, u1.uid)
		}
		wantSame(t, "backing file", slurp(t, filepath.Join(backing, "clean.bin")), data)
		got := filepath.Join(local, "clean.got")
		s.client(t, u2.name, "scan", "get clean.bin "+got)
		wantSame(t, "downloaded by "+u2.name, slurp(t, got), data)
	})

	t.Run("InfectedUploadStoredDownloadDenied", func(t *testing.T) {
		eicar := clamdtest.EICAR()
		putFile(t, filepath.Join(local, "eicar.com"), eicar)
		out := s.client(t, u1.name, "scan", "put "+filepath.Join(local, "eicar.com")+" eicar.com")
		if !strings.Contains(out, "putting file") {
			t.Fatalf("upload as %s: %s", u1.name, out)
		}
		wantSame(t, "backing file", slurp(t, filepath.Join(backing, "eicar.com")), eicar)

		// Download as the other user, in a session kept open until the
		// denial is logged, so that the opener can be looked at.
		sess := s.session(t, u2.name, "scan")
		got := filepath.Join(local, "eicar.got")
		sess.send(t, "get eicar.com "+got)
		lines := m.WaitLogLines(t, logBound, "infected file denied", "path=eicar.com ",
			fmt.Sprintf(" uid=%d ", u2.uid), "signature="+clamdtest.EICARSignature)
		pid := logPid(t, lines[0])
		s.wantServer(t, pid)
		out = sess.close(t)
		if !strings.Contains(out, "NT_STATUS_ACCESS_DENIED") {
			t.Errorf("download of eicar.com as %s: %q; want NT_STATUS_ACCESS_DENIED", u2.name, out)
		}
		if b, err := os.ReadFile(got); err == nil && len(b) > 0 {
			t.Errorf("the download of eicar.com wrote %d bytes", len(b))
		}
		// The uploader cannot read it back either; the file is still there.
		if out := s.client(t, u1.name, "scan", "get eicar.com "+got); !strings.Contains(out, "NT_STATUS_ACCESS_DENIED") {
			t.Errorf("download of eicar.com as %s: %q; want NT_STATUS_ACCESS_DENIED", u1.name, out)
		}
		wantSame(t, "backing file after the downloads", slurp(t, filepath.Join(backing, "eicar.com")), eicar)
	})

	// A download over cache.verify_max_size (1 MiB) uploaded under a
	// temporary name and renamed once its scan after the write is over,
	// through Samba: the rename carries the verdict (cache/carry.go), so
	// the other user's download of it is decided from the cache, with no
	// second scan of the file.
	t.Run("RenamedDownloadScannedOnce", func(t *testing.T) {
		data := pseudoRandom(3<<20+5, 137)
		putFile(t, filepath.Join(local, "big.bin"), data)
		clean := func(s map[string]float64) float64 { return s[`clamfuse_scans_total{result="clean"}`] }
		before := metrics()
		out := s.client(t, u1.name, "scan", "put "+filepath.Join(local, "big.bin")+" big.part")
		if !strings.Contains(out, "putting file") {
			t.Fatalf("upload as %s: %s", u1.name, out)
		}
		// The scan after the write is over.
		m.Within(t, scanBound, "the scan after the upload", func() {
			for clean(metrics()) == clean(before) {
				time.Sleep(10 * time.Millisecond)
			}
		})
		s.client(t, u1.name, "scan", "rename big.part big.bin")
		scanned := metrics()
		got := filepath.Join(local, "big.got")
		s.client(t, u2.name, "scan", "get big.bin "+got)
		wantSame(t, "downloaded by "+u2.name, slurp(t, got), data)
		after := metrics()
		if n := clean(after) - clean(scanned); n != 0 {
			t.Errorf("%v scans for the download of the renamed file; want 0 (its verdict carried over the rename)", n)
		}
		if n := after[`clamfuse_cache_carried_total`] - scanned[`clamfuse_cache_carried_total`]; n != 0 {
			t.Errorf("%v verdicts carried by the download; want 0", n)
		}
		if n := scanned[`clamfuse_cache_carried_total`] - before[`clamfuse_cache_carried_total`]; n < 1 {
			t.Errorf("%v verdicts carried by the rename; want at least 1", n)
		}
	})

	t.Run("DOSAttributes", func(t *testing.T) {
		putFile(t, filepath.Join(local, "attr.txt"), []byte("attributes\n"))
		s.client(t, u1.name, "scan", "put "+filepath.Join(local, "attr.txt")+" attr.txt")
		// store dos attributes = yes: Samba writes user.DOSATTRIB on
		// create, and again on setmode.
		before := xattrGet(t, filepath.Join(backing, "attr.txt"), "user.DOSATTRIB")
		s.client(t, u1.name, "scan", "setmode attr.txt +hr")
		after := xattrGet(t, filepath.Join(backing, "attr.txt"), "user.DOSATTRIB")
		if bytes.Equal(before, after) {
			t.Errorf("user.DOSATTRIB did not change with setmode: %x", after)
		}
		out := s.client(t, u2.name, "scan", "allinfo attr.txt")
		if !regexp.MustCompile(`(?m)^attributes: [A-Z]*[HR][A-Z]*[HR][A-Z]* `).MatchString(out) {
			t.Errorf("allinfo attr.txt as %s shows no hidden and read-only attributes:\n%s", u2.name, out)
		}
		s.client(t, u1.name, "scan", "setmode attr.txt -hr")
		out = s.client(t, u2.name, "scan", "allinfo attr.txt")
		if regexp.MustCompile(`(?m)^attributes: [A-Z]*[HR]`).MatchString(out) {
			t.Errorf("allinfo attr.txt after setmode -hr:\n%s", out)
		}
	})

	t.Run("LockingAsOnPlainShare", func(t *testing.T) {
		// The same smbtorture tests on the plain share and on the mount,
		// with the same outcome each.
		// An oplock and a lease take 3 to 20 s each (smbtorture waits
		// for breaks): those only with CLAMFUSE_SOAK=1 (make soak).
		tests := []string{"smb2.lock", "smb2.sharemode"}
		if os.Getenv("CLAMFUSE_SOAK") != "" {
			tests = append(tests, "smb2.oplock.batch1", "smb2.oplock.exclusive1", "smb2.oplock.levelii500", "smb2.lease.upgrade", "smb2.lease.break")
		}
		want := s.torture(t, u1.name, "native", tests)
		var got map[string]string
		m.Within(t, 5*time.Minute, "smbtorture on the mount", func() { got = s.torture(t, u1.name, "scan", tests) })
		ok := 0
		for name, w := range want {
			if w == "success" {
				ok++
			}
			if got[name] != w {
				t.Errorf("smbtorture %s: %s on the mount, %s on a plain directory", name, got[name], w)
			}
		}
		for name, g := range got {
			if _, seen := want[name]; !seen {
				t.Errorf("smbtorture %s: %s on the mount, not run on a plain directory", name, g)
			}
		}
		if ok < 20 {
			t.Errorf("only %d smbtorture tests succeed on a plain directory; the comparison says little:\n%v", ok, want)
		}
		t.Logf("smbtorture: %d tests, %d succeed on both", len(want), ok)
		if testing.Verbose() {
			names := slices.Sorted(maps.Keys(want))
			for _, name := range names {
				t.Logf("  %s: %s", name, want[name])
			}
		}
	})

	t.Run("List10000", func(t *testing.T) {
		start := time.Now()
		var out string
		m.Within(t, 2*time.Minute, "smbclient ls", func() { out = s.client(t, u2.name, "scan", `cd many; ls`) })
		n := len(regexp.MustCompile(`(?m)^  f\d{5}\.txt +[A-Z]* +0 `).FindAllString(out, -1))
		if n != manyFiles {
			if len(out) > 2000 {
				out = "..." + out[len(out)-2000:]
			}
			t.Errorf("smbclient ls of many/ listed %d files; want %d; smbclient said:\n%s", n, manyFiles, out)
		}
		t.Logf("smbclient ls of %d files: %v", n, time.Since(start).Round(time.Millisecond))
	})
}

// requireSamba skips the test when Samba's programs are missing, or fails
// it when CI is set (.ci/run installs them).
func requireSamba(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"smbd", "smbclient", "smbpasswd", "smbtorture", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s (Debian packages samba, smbclient, samba-testsuite, passwd)", strings.Join(missing, ", "))
	testenv.Skip(t, "Samba test: %s", msg)
}

// smbd is a private Samba server: its own configuration, port on
// 127.0.0.1, passdb and state directories, all beneath dir.
type smbd struct {
	dir, conf string
	port      int
	cmd       *exec.Cmd
	log       *lockedBuffer
	exited    chan struct{}
	passwords map[string]string // user -> password, set by addUser
}

// startSmbd starts smbd in the foreground, serving shares (name -> path)
// on a free port of 127.0.0.1, and stops it at cleanup.
func startSmbd(t *testing.T, dir string, shares map[string]string) *smbd {
	t.Helper()
	s := &smbd{dir: dir, conf: filepath.Join(dir, "smb.conf"), log: &lockedBuffer{}, exited: make(chan struct{}), passwords: map[string]string{}}
	for _, sub := range []string{"lock", "state", "cache", "pid", "private", "ncalrpc", "log"} {
		mustDo(t, os.MkdirAll(filepath.Join(dir, sub), 0o755))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	mustDo(t, err)
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	p := func(sub string) string { return filepath.Join(dir, sub) }
	var conf strings.Builder
	fmt.Fprintf(&conf, `[global]
	netbios name = CLAMFUSETEST
	workgroup = CLAMFUSE
	server role = standalone server
	security = user
	map to guest = never
	passdb backend = tdbsam:%s
	smb ports = %d
	interfaces = 127.0.0.1
	bind interfaces only = yes
	disable netbios = yes
	lock directory = %s
	state directory = %s
	cache directory = %s
	pid directory = %s
	private dir = %s
	ncalrpc dir = %s
	binddns dir = %s
	log file = %s
	max log size = 0
	load printers = no
	printing = bsd
	printcap name = /dev/null
	disable spoolss = yes
	rpc start on demand helpers = no
	usershare path =
	store dos attributes = yes
`, p("private/passdb.tdb"), s.port, p("lock"), p("state"), p("cache"), p("pid"), p("private"), p("ncalrpc"), p("private/bind-dns"), p("log/log.%m"))
	names := make([]string, 0, len(shares))
	for name := range shares {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&conf, "[%s]\n\tpath = %s\n\tread only = no\n", name, shares[name])
	}
	mustDo(t, os.WriteFile(s.conf, []byte(conf.String()), 0o644))

	s.cmd = exec.Command("smbd", "--foreground", "--no-process-group", "--debug-stdout", "--debuglevel=1", "--configfile="+s.conf)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// Its own process group, so that its children can be stopped with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	mustDo(t, s.cmd.Start())
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() { s.stop(t) })

	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-s.exited:
			t.Fatalf("smbd exited before listening on port %d:\n%s", s.port, s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("smbd not listening on port %d after 30s:\n%s", s.port, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// stop sends smbd SIGTERM (it stops its children), then kills what is
// left of its process group.
func (s *smbd) stop(t *testing.T) {
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Logf("smbd did not exit on SIGTERM; killing its process group")
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-s.exited
	if t.Failed() {
		t.Logf("smbd log:\n%s", s.log.String())
	}
}

// addUser adds a Samba account for the Unix user name.
func (s *smbd) addUser(t *testing.T, name, password string) {
	t.Helper()
	cmd := exec.Command("smbpasswd", "-c", s.conf, "-s", "-a", name)
	cmd.Stdin = strings.NewReader(password + "\n" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("smbpasswd -a %s: %v\n%s", name, err, out)
	}
	s.passwords[name] = password
}

// clientArgs are smbclient's and smbtorture's arguments to reach share
// as user.
func (s *smbd) clientArgs(user, share string) []string {
	return []string{"//127.0.0.1/" + share, "-p", strconv.Itoa(s.port), "--configfile=" + s.conf,
		"--user=" + user + "%" + s.passwords[user]}
}

// smbclientTimeout: smbclient gives up on an operation after 20 s by
// default, and a listing of 10 000 files on two busy cores can take
// longer; the tests bound every command themselves (client, m.Within).
const smbclientTimeout = "--timeout=120"

// client runs smbclient -c cmds as user on share and returns its output;
// a command's failure is in the output, for the caller to judge.
func (s *smbd) client(t *testing.T, user, share, cmds string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "smbclient", append(s.clientArgs(user, share), smbclientTimeout, "--command="+cmds)...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("smbclient -c %q as %s: no end after 2 minutes\n%s", cmds, user, out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("smbclient: %v", err)
	}
	return string(out)
}

// smbSession is an smbclient reading commands from a pipe: its SMB
// session (and the smbd process serving it) lasts until close.
type smbSession struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bytes.Buffer
}

func (s *smbd) session(t *testing.T, user, share string) *smbSession {
	t.Helper()
	ss := &smbSession{cmd: exec.Command("smbclient", append(s.clientArgs(user, share), smbclientTimeout)...), out: &bytes.Buffer{}}
	ss.cmd.Stdout, ss.cmd.Stderr = ss.out, ss.out
	var err error
	ss.stdin, err = ss.cmd.StdinPipe()
	mustDo(t, err)
	mustDo(t, ss.cmd.Start())
	t.Cleanup(func() {
		ss.stdin.Close()
		if ss.cmd.ProcessState == nil {
			ss.cmd.Process.Kill()
			ss.cmd.Wait()
		}
	})
	return ss
}

func (ss *smbSession) send(t *testing.T, cmd string) {
	t.Helper()
	if _, err := io.WriteString(ss.stdin, cmd+"\n"); err != nil {
		t.Fatalf("smbclient %q: %v", cmd, err)
	}
}

// close ends the session (end of input) and returns all smbclient said.
func (ss *smbSession) close(t *testing.T) string {
	t.Helper()
	ss.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- ss.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		ss.cmd.Process.Kill()
		<-done
		t.Fatalf("smbclient did not end a minute after its input did:\n%s", ss.out.String())
	}
	return ss.out.String()
}

// wantServer checks that pid (a thread id, as FUSE reports it) is an smbd
// process serving a client: a child of this smbd, running its binary.
func (s *smbd) wantServer(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("opener pid %d: %v (gone before its session ended?)", pid, err)
	}
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `:\s*(\S+)`).FindSubmatch(status)
		if m == nil {
			return ""
		}
		return string(m[1])
	}
	tgid := field("Tgid")
	ppid, _ := os.ReadFile("/proc/" + tgid + "/stat")
	f := strings.Fields(string(ppid[bytes.LastIndexByte(ppid, ')')+1:]))
	exe, _ := os.Readlink("/proc/" + tgid + "/exe")
	want, _ := exec.LookPath("smbd")
	want, _ = filepath.EvalSymlinks(want)
	if len(f) < 2 || f[1] != strconv.Itoa(s.cmd.Process.Pid) || exe != want {
		t.Errorf("opener pid %d (process %s, %s, parent %v) is not a child of smbd %d (%s)", pid, tgid, exe, f[1:2], s.cmd.Process.Pid, want)
	}
}

// logPid returns the pid field of a clamfuse log line.
func logPid(t *testing.T, line string) int {
	t.Helper()
	m := regexp.MustCompile(` pid=(\d+) `).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no pid in %q", line)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// torture runs smbtorture's tests against share as user and returns the
// outcome of each ("success", "failure", "error", "skip"), by name.
func (s *smbd) torture(t *testing.T, user, share string, tests []string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args := append(s.clientArgs(user, share), tests...)
	out, err := exec.CommandContext(ctx, "smbtorture", args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("smbtorture on %s: no end after 4 minutes\n%s", share, out)
	}
	res := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		for _, kind := range []string{"success", "failure", "error", "skip"} {
			if name, ok := strings.CutPrefix(line, kind+": "); ok {
				name, _, _ = strings.Cut(name, " ")
				res[name] = kind
			}
		}
	}
	if len(res) == 0 {
		t.Fatalf("smbtorture on %s: %v, no results:\n%s", share, err, out)
	}
	return res
}

// lockedBuffer is a bytes.Buffer safe for a writing process and a
// reading test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
