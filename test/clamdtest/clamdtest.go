// Package clamdtest starts a real, private clamd for tests.
//
// Every test tier that needs a scanner uses it instead of the system clamd:
// the daemon runs from a directory of its own (config, socket, log, pid file,
// temporary directory) with a tiny test-only signature database, so it never
// touches /run/clamav, /var/lib/clamav or the network, and it starts fast.
//
// The database holds three detections, all built here at Start:
//
//   - an MD5 signature of the EICAR test file (EICAR, EICARSignature);
//   - an MD5 signature of /usr/share/clamav-testfiles/clam.exe, which also
//     matches it inside clam.zip and the other archives of clamav-testfiles
//     (ClamExeSignature);
//   - a body signature of Marker at any offset of any file type
//     (MarkerSignature), so a test can plant a detection anywhere in a
//     large file.
//
// clamd reports signatures from unsigned databases with the suffix
// ".UNOFFICIAL"; the exported signature constants include it.
//
// Start takes about 23 ms here (clamd 1.4.6 on Debian, two sigtool runs
// included; measure it with go test -run '^$' -bench Start
// ./test/clamdtest/): "Bytecode no" and a three-signature database leave
// clamd almost nothing to load. For comparison, a clamd with the official
// databases needs tens of seconds.
//
// Requirements: clamd and sigtool (Debian clamav-daemon and clamav) and
// clamav-testfiles. Nothing is downloaded. New (and Require) skip a test
// when they are missing, saying so, and fail it instead when CI=true
// (testenv.Skip).
//
// Proxy sits between clamfuse and a Clamd, to count scans exactly and to
// hold them while a test sets up the situation it needs.
package clamdtest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"
)

// Signature names as clamd prints them in "stream: <name> FOUND" replies.
const (
	// EICARSignature is reported for the 68-byte EICAR file (EICAR).
	EICARSignature = "Clamfuse.Test.EICAR.UNOFFICIAL"
	// ClamExeSignature is reported for clamav-testfiles' clam.exe, alone or
	// inside an archive such as clam.zip.
	ClamExeSignature = "Clamfuse.Test.ClamExe.UNOFFICIAL"
	// MarkerSignature is reported for any file that contains Marker.
	MarkerSignature = "Clamfuse.Test.Marker.UNOFFICIAL"
)

// Names written to the database; clamd appends ".UNOFFICIAL".
const (
	eicarSigName   = "Clamfuse.Test.EICAR"
	clamExeSigName = "Clamfuse.Test.ClamExe"
	markerSigName  = "Clamfuse.Test.Marker"
)

// Samples from the Debian package clamav-testfiles that the database detects
// as ClamExeSignature.
const (
	ClamExePath = "/usr/share/clamav-testfiles/clam.exe"
	ClamZipPath = "/usr/share/clamav-testfiles/clam.zip"
)

// ErrNotInstalled is wrapped by Start's error when clamd, sigtool or
// clamav-testfiles is missing: New skips (or, in CI, fails) on it.
var ErrNotInstalled = errors.New("clamdtest: clamd, sigtool or clamav-testfiles not installed")

// Timeouts.
const (
	startTimeout  = 60 * time.Second // clamd answering PING after exec
	reloadTimeout = 60 * time.Second // RELOAD until the new engine is active
	stopTimeout   = 10 * time.Second // SIGTERM until SIGKILL
	cmdTimeout    = 5 * time.Second  // one raw command round trip
	pollInterval  = 10 * time.Millisecond
)

// maxSocketPath is the longest socket path that fits sun_path (108 bytes,
// including the terminating NUL).
const maxSocketPath = 107

// EICAR returns the 68-byte EICAR test file. It is assembled from pieces so
// that no source file of the repository is itself detected by a scanner.
func EICAR() []byte {
	parts := []string{
		`X5O!P%@AP[4\PZX54(P^)7CC)7}$`,
		"EICAR-STANDARD-",
		"ANTIVIRUS-TEST-",
		"FILE!",
		"$H+H*",
	}
	return []byte(strings.Join(parts, ""))
}

// Marker returns the marker string detected as MarkerSignature at any offset
// of any file: "CLAMFUSE-TEST-MARKER-" followed by 32 fixed hex digits. It is
// assembled from pieces so that this source file does not contain it.
func Marker() []byte {
	parts := []string{
		"CLAMFUSE-", "TEST-", "MARKER-",
		"7f3a9c2e", "51d84b06", "e9c17a3f", "2b6d0854",
	}
	return []byte(strings.Join(parts, ""))
}

// Options tune the private clamd.
type Options struct {
	// MaxFileSize is clamd's MaxFileSize and MaxScanSize, in clamd syntax
	// ("200M", "1M", "512K"). Default "200M".
	MaxFileSize string
	// StreamMaxLength is clamd's StreamMaxLength, the most INSTREAM accepts
	// before it answers "INSTREAM size limit exceeded. ERROR".
	// Default "200M".
	StreamMaxLength string
	// ExtraConfig is appended verbatim to clamd.conf (one directive per
	// line). clamd keeps the last value of a repeated directive, so this
	// overrides the defaults, e.g. "MaxThreads 2\nMaxScanSize 400M".
	ExtraConfig string
}

// Clamd is a private clamd process. Its methods are safe for concurrent use.
type Clamd struct {
	// Socket is the path of clamd's unix socket: Dir/clamd.sock, or a
	// short directory under /tmp when that path would not fit sun_path.
	Socket string
	// Dir holds clamd.conf, clamd.log, clamd.pid, the db/ and tmp/
	// directories and, usually, the socket.
	Dir string
	// ConfigFile is the clamd.conf clamd runs with.
	ConfigFile string
	// LogFile is clamd's log (LogVerbose, LogClean, LogTime).
	LogFile string
	// DBDir is the signature database directory.
	DBDir string

	clamdPath string
	shortDir  string // socket's own directory under /tmp, or ""

	// mu serializes Stop, Restart and Reload; it guards proc and done.
	mu   sync.Mutex
	proc *os.Process   // running clamd, nil when stopped
	done chan struct{} // closed when proc has exited and been reaped
}

// Start builds the test signature database in dir (created if missing),
// writes dir/clamd.conf, starts clamd in the foreground and returns once it
// answers PING. On failure the error carries the tail of clamd's log.
// Start removes signatures left in dir by AddNDBSignature and truncates the
// log of an earlier run.
func Start(dir string, opts Options) (*Clamd, error) {
	if opts.MaxFileSize == "" {
		opts.MaxFileSize = "200M"
	}
	if opts.StreamMaxLength == "" {
		opts.StreamMaxLength = "200M"
	}
	clamdPath, err := findTool("clamd", "/usr/sbin/clamd", "/usr/local/sbin/clamd")
	if err != nil {
		return nil, err
	}
	sigtoolPath, err := findTool("sigtool", "/usr/bin/sigtool", "/usr/local/bin/sigtool")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(ClamExePath); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}

	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("clamdtest: %w", err)
	}
	c := &Clamd{
		Dir:        dir,
		ConfigFile: filepath.Join(dir, "clamd.conf"),
		LogFile:    filepath.Join(dir, "clamd.log"),
		DBDir:      filepath.Join(dir, "db"),
		clamdPath:  clamdPath,
	}
	for _, d := range []string{dir, c.DBDir, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("clamdtest: %w", err)
		}
	}
	if err := c.writeDB(sigtoolPath); err != nil {
		return nil, err
	}

	c.Socket = filepath.Join(dir, "clamd.sock")
	if len(c.Socket) > maxSocketPath {
		short, err := os.MkdirTemp("/tmp", "cft")
		if err != nil {
			return nil, fmt.Errorf("clamdtest: socket directory: %w", err)
		}
		c.shortDir = short
		c.Socket = filepath.Join(short, "clamd.sock")
	}
	if err := os.WriteFile(c.ConfigFile, []byte(c.config(opts)), 0o644); err != nil {
		c.removeSocket()
		return nil, fmt.Errorf("clamdtest: %w", err)
	}
	if err := os.Remove(c.LogFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.removeSocket()
		return nil, fmt.Errorf("clamdtest: %w", err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.startLocked(); err != nil {
		c.removeSocket()
		return nil, err
	}
	return c, nil
}

// Installed says why Start cannot run here (clamd, sigtool or
// clamav-testfiles missing), or "" when it can.
func Installed() string {
	for _, tool := range []struct{ name, fallback string }{
		{"clamd", "/usr/sbin/clamd"}, {"sigtool", "/usr/bin/sigtool"},
	} {
		if _, err := findTool(tool.name, tool.fallback, "/usr/local/sbin/"+tool.name, "/usr/local/bin/"+tool.name); err != nil {
			return err.Error()
		}
	}
	if _, err := os.Stat(ClamExePath); err != nil {
		return fmt.Sprintf("%v: %v", ErrNotInstalled, err)
	}
	return ""
}

// Require skips t, saying why, when a private clamd cannot run here
// (testenv.Skip: with CI=true it fails t instead). New calls it; tests
// that call Start themselves call it first.
func Require(t testing.TB) {
	t.Helper()
	if why := Installed(); why != "" {
		testenv.Skip(t, "needs a real clamd: %s (install the Debian packages clamav-daemon, clamav and clamav-testfiles)", why)
	}
}

// New starts a private clamd for the test t with Start in a temporary
// directory and stops it in t.Cleanup. When clamd, sigtool or
// clamav-testfiles is missing it skips t (Require). When t has failed,
// the cleanup logs the tail of clamd's log.
func New(t testing.TB, opts Options) *Clamd {
	t.Helper()
	Require(t)
	c, err := Start(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clamdtest: tail of %s:\n%s", c.LogFile, c.logTail())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("clamdtest: %v", err)
		}
	})
	return c
}

// Address returns the socket as a "unix:" address.
func (c *Clamd) Address() string { return "unix:" + c.Socket }

// Done returns a channel that is closed when the current clamd process exits,
// for whatever reason. After Stop it is closed; after Restart it belongs to
// the new process.
func (c *Clamd) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return c.done
}

// Stop sends clamd SIGTERM, waits up to 10s, then SIGKILLs it, and removes
// the socket (and its short directory, if any). Stopping a stopped Clamd
// does nothing and returns nil.
func (c *Clamd) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked()
}

// Restart starts clamd again with the same directory, configuration,
// database (including signatures added by AddNDBSignature) and socket, and
// waits for PING. It stops clamd first if it is running.
func (c *Clamd) Restart() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stopLocked(); err != nil {
		return err
	}
	return c.startLocked()
}

// AddNDBSignature appends a body signature "name:0:*:hexBody" (any file
// type, any offset) to db/clamfuse-extra.ndb. clamd only sees it after
// Reload or Restart, and reports it as name + ".UNOFFICIAL". hexBody uses
// .ndb body syntax: hex bytes, optionally with wildcards such as ?? or *.
func (c *Clamd) AddNDBSignature(name, hexBody string) error {
	if name == "" || strings.ContainsAny(name, ":\n\r \t") {
		return fmt.Errorf("clamdtest: bad signature name %q", name)
	}
	if hexBody == "" || strings.ContainsAny(hexBody, ":\n\r \t") {
		return fmt.Errorf("clamdtest: bad signature body %q", hexBody)
	}
	f, err := os.OpenFile(filepath.Join(c.DBDir, "clamfuse-extra.ndb"),
		os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("clamdtest: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%s:0:*:%s\n", name, hexBody)
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return fmt.Errorf("clamdtest: %w", werr)
	}
	return nil
}

// Reload sends RELOAD and returns once clamd has activated the new database
// and answers PING again. clamd reloads in a background thread, and its
// RELOADING reply says nothing about when the new engine serves scans, so
// Reload watches the log for "Activating the newly loaded database..." (or
// for the failure message, which it returns as an error).
func (c *Clamd) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return errors.New("clamdtest: reload: clamd is not running")
	}
	var offset int64
	if fi, err := os.Stat(c.LogFile); err == nil {
		offset = fi.Size()
	}
	reply, err := command(c.Socket, "RELOAD")
	if err != nil {
		return fmt.Errorf("clamdtest: reload: %w", err)
	}
	if reply != "RELOADING" {
		return fmt.Errorf("clamdtest: reload: clamd answered %q", reply)
	}
	deadline := time.Now().Add(reloadTimeout)
	for {
		text := c.readLogFrom(offset)
		switch {
		case strings.Contains(text, "Activating the newly loaded database"):
			// The main thread logs this line and swaps the engine before
			// it accepts another connection, so a PING now is ordered
			// after the swap.
			return c.waitPing(deadline)
		case strings.Contains(text, "keeping the previous instance"):
			return fmt.Errorf("clamdtest: reload failed:\n%s", text)
		}
		select {
		case <-c.done:
			return fmt.Errorf("clamdtest: clamd exited during reload:\n%s", c.logTail())
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clamdtest: reload not done after %v:\n%s", reloadTimeout, c.logTail())
		}
	}
}

// ScanCount returns, best effort, how many scan verdicts clamd has logged
// since Start (Restart does not reset it). clamd.conf sets LogClean yes, so
// every scanned file or stream logs one line: "instream(local): OK",
// "instream(local): <name> FOUND", or "<path>: OK" / "<path>: <name> FOUND"
// for SCAN, CONTSCAN, MULTISCAN and FILDES. ScanCount counts those lines;
// scans that end in an error (such as "INSTREAM size limit exceeded") are not
// counted. clamd writes the line just after it sends the reply, so a caller
// that wants to see its own scans counted should poll until the count
// reaches the value it expects.
func (c *Clamd) ScanCount() (int, error) {
	f, err := os.Open(c.LogFile)
	if err != nil {
		return 0, fmt.Errorf("clamdtest: %w", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if isVerdictLine(sc.Text()) {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("clamdtest: reading %s: %w", c.LogFile, err)
	}
	return n, nil
}

// isVerdictLine reports whether a clamd log line reports a scan verdict.
func isVerdictLine(line string) bool {
	// With LogTime yes a line reads "Wed Nov 25 15:18:48 2026 -> msg".
	if _, msg, ok := strings.Cut(line, " -> "); ok {
		line = msg
	}
	if strings.HasPrefix(line, "WARNING:") || strings.HasPrefix(line, "ERROR:") {
		return false
	}
	return strings.HasSuffix(line, ": OK") || strings.HasSuffix(line, " FOUND")
}

// command sends one null-terminated command ("PING", "VERSION", "RELOAD",
// ...) to the clamd socket and returns its reply without the terminator.
// It is the minimal client this package needs; the product's client lives
// in another package.
func command(socket, cmd string) (string, error) {
	conn, err := net.DialTimeout("unix", socket, cmdTimeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(cmdTimeout)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(conn, "z"+cmd+"\x00"); err != nil {
		return "", err
	}
	reply, err := bufio.NewReader(conn).ReadString(0)
	if err != nil && !(errors.Is(err, io.EOF) && reply != "") {
		return "", err
	}
	return strings.TrimSuffix(reply, "\x00"), nil
}

// startLocked runs clamd and waits for PING. c.mu must be held.
func (c *Clamd) startLocked() error {
	if c.shortDir != "" {
		if err := os.MkdirAll(c.shortDir, 0o700); err != nil {
			return fmt.Errorf("clamdtest: socket directory: %w", err)
		}
	}
	out, err := os.OpenFile(filepath.Join(c.Dir, "clamd.out"),
		os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("clamdtest: %w", err)
	}
	defer out.Close() // the child has its own copy

	cmd := exec.Command(c.clamdPath, "-c", c.ConfigFile)
	cmd.Dir = c.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()

	// Start and reap clamd on one locked OS thread that lives exactly as
	// long as clamd: Pdeathsig fires when the thread that forked the child
	// exits, not the process, so clamd also dies with a test binary killed
	// by a timeout, and never with an unrelated runtime thread.
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with us
		if err := cmd.Start(); err != nil {
			started <- err
			close(done)
			return
		}
		started <- nil
		_ = cmd.Wait() // clamd exits 0 on SIGTERM; other statuses show in the log
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("clamdtest: starting %s: %w", c.clamdPath, err)
	}
	c.proc, c.done = cmd.Process, done

	deadline := time.Now().Add(startTimeout)
	if err := c.waitPing(deadline); err != nil {
		_ = c.stopLocked()
		return fmt.Errorf("clamdtest: clamd did not start: %w\n--- clamd output:\n%s\n--- tail of %s:\n%s",
			err, tailFile(filepath.Join(c.Dir, "clamd.out")), c.LogFile, c.logTail())
	}
	return nil
}

// waitPing polls PING until PONG, clamd's exit, or the deadline.
func (c *Clamd) waitPing(deadline time.Time) error {
	for {
		reply, err := command(c.Socket, "PING")
		if err == nil && reply == "PONG" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("PING answered %q", reply)
		}
		select {
		case <-c.done:
			return fmt.Errorf("clamd exited (last PING: %v)", err)
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG by the deadline (last PING: %v)", err)
		}
	}
}

// stopLocked stops clamd and removes the socket. c.mu must be held.
func (c *Clamd) stopLocked() error {
	var errs []error
	if c.proc != nil {
		if err := c.proc.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("clamdtest: SIGTERM: %w", err))
		}
		select {
		case <-c.done:
		case <-time.After(stopTimeout):
			if err := c.proc.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				errs = append(errs, fmt.Errorf("clamdtest: SIGKILL: %w", err))
			}
			<-c.done
		}
		c.proc = nil
	}
	if err := c.removeSocket(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeSocket removes the socket and its short directory, if any.
func (c *Clamd) removeSocket() error {
	if c.Socket == "" {
		return nil
	}
	if err := os.Remove(c.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clamdtest: %w", err)
	}
	if c.shortDir != "" {
		if err := os.RemoveAll(c.shortDir); err != nil {
			return fmt.Errorf("clamdtest: %w", err)
		}
	}
	return nil
}

// config returns the contents of clamd.conf.
func (c *Clamd) config(opts Options) string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s %s\n", k, v) }
	b.WriteString("# Written by clamfuse test/clamdtest: a private clamd for tests.\n")
	line("LocalSocket", c.Socket)
	line("FixStaleSocket", "yes")
	line("DatabaseDirectory", c.DBDir)
	line("TemporaryDirectory", filepath.Join(c.Dir, "tmp"))
	line("PidFile", filepath.Join(c.Dir, "clamd.pid"))
	line("Foreground", "yes")
	line("LogFile", c.LogFile)
	line("LogFileMaxSize", "0") // unlimited: ScanCount reads the whole log
	line("LogTime", "yes")
	line("LogVerbose", "yes")
	line("LogClean", "yes") // one line per clean scan, for ScanCount
	line("Bytecode", "no")  // fast start: nothing to compile
	line("SelfCheck", "0")  // the database changes only on Reload/Restart
	line("AlertExceedsMax", "yes")
	line("MaxFileSize", opts.MaxFileSize)
	line("MaxScanSize", opts.MaxFileSize)
	line("StreamMaxLength", opts.StreamMaxLength)
	line("MaxThreads", "8")
	if opts.ExtraConfig != "" {
		b.WriteString("# ExtraConfig\n")
		b.WriteString(strings.TrimRight(opts.ExtraConfig, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

// writeDB writes the test signature database into c.DBDir: an .hdb made by
// sigtool --md5 from EICAR and clam.exe, and an .ndb for Marker. It removes
// the database of AddNDBSignature.
func (c *Clamd) writeDB(sigtool string) error {
	eicarFile := filepath.Join(c.Dir, "tmp", "eicar.com")
	if err := os.WriteFile(eicarFile, EICAR(), 0o644); err != nil {
		return fmt.Errorf("clamdtest: %w", err)
	}
	eicarSig, err := md5Sig(sigtool, eicarFile, eicarSigName)
	os.Remove(eicarFile)
	if err != nil {
		return err
	}
	clamExeSig, err := md5Sig(sigtool, ClamExePath, clamExeSigName)
	if err != nil {
		return err
	}
	hdb := eicarSig + "\n" + clamExeSig + "\n"
	// Target 0 (any file type), offset * (anywhere).
	ndb := markerSigName + ":0:*:" + hex.EncodeToString(Marker()) + "\n"
	files := []struct{ name, data string }{
		{"clamfuse-test.hdb", hdb},
		{"clamfuse-test.ndb", ndb},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(c.DBDir, f.name), []byte(f.data), 0o644); err != nil {
			return fmt.Errorf("clamdtest: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(c.DBDir, "clamfuse-extra.ndb")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("clamdtest: %w", err)
	}
	return nil
}

// md5Sig runs sigtool --md5 on file and returns its "md5:size:name" line
// with the name replaced by name.
func md5Sig(sigtool, file, name string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(sigtool, "--md5", file)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("clamdtest: sigtool --md5 %s: %w: %s", file, err, stderr.Bytes())
	}
	fields := strings.SplitN(strings.TrimSpace(string(out)), ":", 3)
	if len(fields) != 3 || len(fields[0]) != 32 {
		return "", fmt.Errorf("clamdtest: sigtool --md5 %s: unexpected output %q", file, out)
	}
	return fields[0] + ":" + fields[1] + ":" + name, nil
}

// findTool returns the path of a ClamAV program: from PATH, else from the
// usual locations (sbin is often missing from a user's PATH).
func findTool(name string, fallbacks ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, p := range fallbacks {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s not found in PATH or %s", ErrNotInstalled, name, strings.Join(fallbacks, ", "))
}

// readLogFrom returns clamd's log from offset on.
func (c *Clamd) readLogFrom(offset int64) string {
	f, err := os.Open(c.LogFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<40))
	return string(b)
}

// logTail returns the last lines of clamd's log, for error messages.
func (c *Clamd) logTail() string { return tailFile(c.LogFile) }

// tailFile returns about the last 30 lines of a file.
func tailFile(path string) string {
	const maxLines, maxBytes = 30, 8 << 10
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}
