package main

import (
	cffs "github.com/clamfuse/clamfuse/fs"

	"context"
	"errors"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	fusectlDir     = "/sys/fs/fuse/connections"
	mountTimeout   = 20 * time.Second // process start until the mount is live
	unmountTimeout = 10 * time.Second // SIGTERM or fusermount3 -u until exit
)

// kind is what a system is.
type kind int

const (
	kindNative   kind = iota // the backing directory itself
	kindClamfuse             // bin/clamfuse mount
	kindClamFS               // Debian's clamfs
	kindBare                 // bin/clamfuse scan: clamd without FUSE
	kindFloor                // floorfs: the thinnest FUSE server (floor.go)
	kindFloorPT              // floorfs -p: the same with FUSE passthrough (floor.go)
)

// system is one column of the table.
type system struct {
	name string
	kind kind
	b    *bench
	mnt  string // mountpoint, for the FUSE kinds

	// broken, when set, says why the system cannot run at all; its
	// figures are then "n/a" with this reason.
	broken string

	mu  sync.Mutex // guards m: the signal goroutine reads it
	m   *mount
	gen int // mounts made so far; names the log files

	primed   map[string]int // workload id -> mount generation it was primed on
	lastUsed time.Time      // end of the last prime or timed run

	config string // clamfuse's config file; "" for clamfuse.toml in the work directory
	clamd  string // clamfuse's clamd address; "" for the bench's clamd
	src    string // clamfuse's backing directory; "" for the data set's

	caching caching // clamfuse's, from the log of its last mount
}

func (s *system) fuse() bool {
	return s.kind == kindClamfuse || s.kind == kindClamFS || s.floor()
}

// floor reports whether s is one of the floors, which trust names and
// attributes for an hour.
func (s *system) floor() bool { return s.kind == kindFloor || s.kind == kindFloorPT }

// root is where the data set appears for this system.
func (s *system) root() string {
	if s.fuse() {
		return s.mnt
	}
	return s.b.data.src
}

func (s *system) current() *mount {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}

// ensure mounts the system if it is not mounted, or if fresh, unmounts
// and mounts it again, which also empties its verdict cache.
func (s *system) ensure(fresh bool) error {
	if !s.fuse() {
		return nil
	}
	if m := s.current(); m != nil {
		if !fresh && m.alive() {
			return nil
		}
		s.teardown()
	}
	m, err := s.start()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

// teardown unmounts the system, if mounted.
func (s *system) teardown() {
	s.mu.Lock()
	m := s.m
	s.m = nil
	s.mu.Unlock()
	if m != nil {
		if err := m.teardown(); err != nil {
			logf("%s: %v (log: %s)", s.name, err, m.logPath)
		}
	}
}

// start runs the FUSE server and waits until its mount is live.
func (s *system) start() (*mount, error) {
	b := s.b
	s.gen++
	logPath := filepath.Join(b.logDir, fmt.Sprintf("%s-%03d.log", strings.ToLower(s.name), s.gen))
	var cmd *exec.Cmd
	switch s.kind {
	case kindClamfuse:
		config, src := s.config, s.src
		if config == "" {
			config = filepath.Join(b.opts.dir, "clamfuse.toml")
		}
		if src == "" {
			src = b.data.src
		}
		clamd := s.clamd
		if clamd == "" {
			clamd = b.clamd.Address()
		}
		cmd = exec.Command(b.bin, "mount", "--config", config, "--clamd", clamd, src, s.mnt)
		if asUser != nil {
			cmd.Args = append(cmd.Args[:2], append([]string{"--allow-other"}, cmd.Args[2:]...)...)
		}
	case kindClamFS:
		cmd = exec.Command("clamfs", filepath.Join(b.opts.dir, "clamfs.xml"))
	case kindFloor:
		cmd = exec.Command(b.floorBin, b.data.src, s.mnt)
	case kindFloorPT:
		cmd = exec.Command(b.floorBin, "-p", b.data.src, s.mnt)
	default:
		return nil, fmt.Errorf("%s is not mounted", s.name)
	}
	clearStaleMount(s.mnt)
	m, err := startMount(cmd, s.mnt, logPath, s.kind == kindClamFS)
	if err == nil && s.kind == kindClamfuse {
		m.caching = clamfuseCaching(logPath)
		s.caching = m.caching
		b.note("clamfuse's kernel caches: " + m.caching.String() + ".")
	}
	return m, err
}

// caching is how long a clamfuse mount lets the kernel trust names and
// attributes, from its log.
type caching struct {
	known    bool
	watching bool   // invalidation: changes behind the mount are passed on
	watched  string // watched_attr_timeout, when watching
	// passthrough: the kernel granted FUSE passthrough (and
	// mount.passthrough asked for it): opens the gate allowed are read
	// and written by the kernel itself.
	passthrough bool
}

func (c caching) String() string {
	if !c.known {
		return c.names()
	}
	pt := "FUSE passthrough granted: no (clamfuse serves reads and writes)"
	if c.passthrough {
		pt = "FUSE passthrough granted: yes (the kernel reads, writes and maps the files judged itself)"
	}
	return c.names() + "; " + pt
}

func (c caching) names() string {
	switch {
	case !c.known:
		return "not known (no \"mounted\" line in its log at level info)"
	case c.watching:
		return "invalidation on (fanotify): names and attributes trusted for " + c.watched +
			" (mount.watched_attr_timeout), so the warm rows are served from the kernel's cache, as a user sees them; " +
			"a change made directly in the backing directory would still show within milliseconds"
	}
	return "invalidation off or unavailable: names and attributes trusted for mount.attr_timeout (1s), " +
		"which the warm rows wait out before each run"
}

// clamfuseCaching reads the mount's INFO lines: "mounted" says whether
// invalidation runs, the watcher's line its timeout. The mount is live
// when they are written; wait a moment for them.
func clamfuseCaching(logPath string) caching {
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		var c caching
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.Index(line, "watched_attr_timeout="); i >= 0 {
				c.watched = strings.Fields(line[i+len("watched_attr_timeout="):])[0]
			}
			if strings.Contains(line, "msg=mounted") {
				c.known = true
				c.watching = strings.Contains(line, "invalidation=true")
				c.passthrough = strings.Contains(line, "passthrough=true")
			}
		}
		if c.known || time.Now().After(deadline) {
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mount is a running FUSE server and its mount.
type mount struct {
	target        string
	cmd           *exec.Cmd
	conn          int // fusectl connection number, -1 if unknown
	logPath       string
	exited        chan struct{}
	exitErr       error
	useFusermount bool
	aborted       atomic.Bool
	caching       caching // clamfuse's, from its log

	once sync.Once
	err  error
}

func startMount(cmd *exec.Cmd, target, logPath string, useFusermount bool) (*mount, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own process group, so a terminal's Ctrl-C reaches only the bench,
	// which then unmounts in order; killed if the bench dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &mount{target: target, cmd: cmd, conn: -1, logPath: logPath, exited: make(chan struct{}), useFusermount: useFusermount}
	go func() { m.exitErr = cmd.Wait(); close(m.exited) }()

	deadline := time.Now().Add(mountTimeout)
	for !cffs.IsFuseMount(target) {
		select {
		case <-m.exited:
			return nil, fmt.Errorf("%s exited before mounting (%v): %s", filepath.Base(cmd.Path), m.exitErr, tail(logPath))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = m.teardown()
			return nil, fmt.Errorf("%s: mount not live after %v: %s", filepath.Base(cmd.Path), mountTimeout, tail(logPath))
		}
	}
	var st unix.Stat_t
	if err := statWithin(target, &st, mountTimeout); err != nil {
		_ = m.teardown()
		return nil, fmt.Errorf("%s: mounted but stat %s: %v: %s", filepath.Base(cmd.Path), target, err, tail(logPath))
	}
	m.conn = int(unix.Minor(st.Dev))
	return m, nil
}

// statWithin stats p, giving up (and leaving the stat to finish in the
// background) after d.
func statWithin(p string, st *unix.Stat_t, d time.Duration) error {
	done := make(chan error, 1)
	var tmp unix.Stat_t
	go func() { done <- unix.Stat(p, &tmp) }()
	select {
	case err := <-done:
		*st = tmp
		return err
	case <-time.After(d):
		return fmt.Errorf("no answer after %v", d)
	}
}

func (m *mount) alive() bool {
	if m.aborted.Load() {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return cffs.IsFuseMount(m.target)
	}
}

// pid is the FUSE server's process id.
func (m *mount) pid() int { return m.cmd.Process.Pid }

// abort fails every pending and future request of the mount with
// ENOTCONN; it is how a hung mount is cleared.
func (m *mount) abort() {
	m.aborted.Store(true)
	if m.conn >= 0 {
		_ = os.WriteFile(filepath.Join(fusectlDir, strconv.Itoa(m.conn), "abort"), []byte("1"), 0)
	}
}

// teardown unmounts politely (SIGTERM for clamfuse and floorfs,
// fusermount3 -u for ClamFS), then by force: abort the connection, kill,
// detach lazily.
func (m *mount) teardown() error {
	m.once.Do(func() {
		polite := func() {
			if m.useFusermount {
				ctx, cancel := context.WithTimeout(context.Background(), unmountTimeout)
				defer cancel()
				if out, err := exec.CommandContext(ctx, "fusermount3", "-u", m.target).CombinedOutput(); err != nil {
					m.err = fmt.Errorf("fusermount3 -u %s: %v: %s", m.target, err, strings.TrimSpace(string(out)))
				}
			} else {
				_ = m.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		select {
		case <-m.exited:
		default:
			polite()
			select {
			case <-m.exited:
			case <-time.After(unmountTimeout):
				m.err = errors.Join(m.err, fmt.Errorf("%s did not exit %v after unmounting: aborted and killed", filepath.Base(m.cmd.Path), unmountTimeout))
				m.abort()
				_ = m.cmd.Process.Kill()
				<-m.exited
			}
		}
		if cffs.IsFuseMount(m.target) {
			m.abort()
			_ = unix.Unmount(m.target, unix.MNT_DETACH)
		}
	})
	return m.err
}

// clearStaleMount detaches FUSE mounts left on p by a killed run.
func clearStaleMount(p string) {
	for i := 0; i < 10 && cffs.IsFuseMount(p); i++ {
		logf("detaching a stale FUSE mount on %s", p)
		var st unix.Stat_t
		if statWithin(p, &st, time.Second) == nil {
			_ = os.WriteFile(filepath.Join(fusectlDir, strconv.Itoa(int(unix.Minor(st.Dev))), "abort"), []byte("1"), 0)
		}
		_ = unix.Unmount(p, unix.MNT_DETACH)
	}
}

// ensureFusectl mounts fusectl if it is not mounted.
func ensureFusectl() error {
	var st unix.Statfs_t
	if unix.Statfs(fusectlDir, &st) == nil && st.Type == 0x65735543 { // FUSECTL_SUPER_MAGIC
		return nil
	}
	return unix.Mount("fusectl", fusectlDir, "fusectl", 0, "")
}

// setupSystems writes the clamfuse and ClamFS configurations, makes the
// mountpoints, and checks that each FUSE system mounts at all.
func (b *bench) setupSystems() error {
	mntDir := filepath.Join(b.opts.dir, "mnt")
	native := &system{name: "native", kind: kindNative, b: b}
	cf := &system{name: "clamfuse", kind: kindClamfuse, b: b, mnt: filepath.Join(mntDir, "clamfuse")}
	cfs := &system{name: "ClamFS", kind: kindClamFS, b: b, mnt: filepath.Join(mntDir, "clamfs")}
	bare := &system{name: "bare clamd", kind: kindBare, b: b}
	floor := &system{name: "FUSE floor", kind: kindFloor, b: b, mnt: filepath.Join(mntDir, "floor")}
	floorPT := &system{name: "passthrough floor", kind: kindFloorPT, b: b, mnt: filepath.Join(mntDir, "floor-pt")}
	b.systems = []*system{native, cf, cfs, bare, floor, floorPT}
	for _, s := range b.systems {
		s.primed = map[string]int{}
		if s.mnt != "" {
			if err := os.MkdirAll(s.mnt, 0o755); err != nil {
				return err
			}
		}
	}

	if err := b.writeClamfuseConfig("clamfuse.toml", clamfuseConf{}); err != nil {
		return err
	}
	if err := cf.ensure(true); err != nil {
		return fmt.Errorf("clamfuse does not mount: %v", err)
	}
	b.setupFloor(floor)
	b.setupFloorPT(floorPT, floor)

	if b.opts.noClamFS {
		cfs.broken = "skipped (-no-clamfs)"
		return nil
	}
	if _, err := exec.LookPath("clamfs"); err != nil {
		cfs.broken = "clamfs not installed (Debian package clamfs)"
		return nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		cfs.broken = "fusermount3 not installed (Debian package fuse3)"
		return nil
	}
	// ClamFS: INSTREAM like clamfuse, to the same clamd; no file size
	// limit (every file scanned, as clamfuse does here), no extension
	// white- or blacklist; the cache as in Debian's sample config; in
	// the foreground (debug fork="no") so that we own the process.
	xml := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by test/cmd/bench. -->
<clamfs>
    <clamd socket="%s" mode="stream" check="yes" />
    <filesystem root="%s" mountpoint="%s" readonly="no" public="no" nonempty="no" />
    <cache entries="65536" expire="10800000" />
    <log method="stdout" verbose="no" />
    <debug threads="yes" fork="no" />
</clamfs>
`, html.EscapeString(b.clamd.Socket), html.EscapeString(b.data.src), html.EscapeString(cfs.mnt))
	if err := os.WriteFile(filepath.Join(b.opts.dir, "clamfs.xml"), []byte(xml), 0o644); err != nil {
		return err
	}
	if err := cfs.ensure(true); err != nil {
		cfs.broken = fmt.Sprintf("ClamFS does not mount here: %v", err)
		logf("%s", cfs.broken)
		return nil
	}
	// A first open through ClamFS shows whether it can scan at all.
	probe := filepath.Join(cfs.mnt, b.data.smallF[0])
	if err := withTimeout(b.ctx, 60*time.Second, cfs, func(context.Context) error { return readFile(probe, make([]byte, 128<<10)) }); err != nil {
		cfs.broken = fmt.Sprintf("ClamFS mounts but cannot open a clean file: %v (log: %s)", err, tail(cfs.current().logPath))
		logf("%s", cfs.broken)
		cfs.teardown()
	}
	return nil
}

// clamfuseConf is what a clamfuse config of the bench sets beyond the
// main table's.
type clamfuseConf struct {
	transport     string // clamd.transport; "" for the default (auto)
	prewarm       bool   // scan.prewarm
	logLevel      string // log.level; "" for info (the mount's INFO lines say which timeouts are in effect)
	verifyMaxSize string // cache.verify_max_size; "" for the default (1MiB)
	metricsListen string // metrics.listen; "" for none
	clamd         string // clamd.address; "" for the bench's clamd
}

// writeClamfuseConfig writes clamfuse's config to name in the work
// directory: defaults, but the large file must be scanned, not denied as
// oversize, and a 1 GiB scan must fit the timeout; then c.
func (b *bench) writeClamfuseConfig(name string, c clamfuseConf) error {
	tr := ""
	if c.transport != "" {
		tr = fmt.Sprintf("transport = %q\n", c.transport)
	}
	level := c.logLevel
	if level == "" {
		level = "info"
	}
	// No state file: every run starts cold, whatever ran before.
	cache := "\n[cache]\nstate_file = \"\"\n"
	if c.verifyMaxSize != "" {
		cache += fmt.Sprintf("verify_max_size = %q\n", c.verifyMaxSize)
	}
	if c.metricsListen != "" {
		cache += fmt.Sprintf("\n[metrics]\nlisten = %q\n", c.metricsListen)
	}
	pt := b.opts.passthrough
	if pt == "" {
		pt = "auto"
	}
	mount := fmt.Sprintf("[mount]\npassthrough = %q\n", pt)
	if b.opts.readdirPlus != "" {
		mount += fmt.Sprintf("readdirplus = %q\n", b.opts.readdirPlus)
	}
	clamd := c.clamd
	if clamd == "" {
		clamd = b.clamd.Address()
	}
	toml := fmt.Sprintf(`# Written by test/cmd/bench.
%s[clamd]
address = %q
timeout = "10m"
%s
[scan]
max_size = "2000MiB"
prewarm = %t
%s
[log]
level = %q
`, mount, clamd, tr, c.prewarm, cache, level)
	return os.WriteFile(filepath.Join(b.opts.dir, name), []byte(toml), 0o644)
}

// extraClamfuse sets up "clamfuse ID", a clamfuse mounted for one
// comparison only (not a table column): its config file and mountpoint
// in the work directory, its backing directory src ("" for the data
// set's). The caller mounts it (ensure); dropExtra unmounts it.
func (b *bench) extraClamfuse(id, src string, c clamfuseConf) (*system, error) {
	config := filepath.Join(b.opts.dir, "clamfuse-"+id+".toml")
	if err := b.writeClamfuseConfig(filepath.Base(config), c); err != nil {
		return nil, err
	}
	s := &system{
		name: "clamfuse " + id, kind: kindClamfuse, b: b, primed: map[string]int{},
		mnt: filepath.Join(b.opts.dir, "mnt", "clamfuse-"+id), config: config, src: src, clamd: c.clamd,
	}
	clearStaleMount(s.mnt)
	if err := os.MkdirAll(s.mnt, 0o755); err != nil {
		return nil, err
	}
	b.extra = append(b.extra, s)
	return s, nil
}

// dropExtra unmounts and forgets the extraClamfuse systems.
func (b *bench) dropExtra() {
	for _, s := range b.extra {
		s.teardown()
	}
	b.extra = nil
}

// tail returns the end of a log file, on one line, for error messages.
func tail(p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	if s == "" {
		return "(empty log " + p + ")"
	}
	return strings.ReplaceAll(s, "\n", " | ")
}

// withTimeout runs fn, and if it has not returned after d (or the bench
// is cancelled), aborts the FUSE connection of s, which makes fn's
// blocked calls fail, and returns an error.
func withTimeout(parent context.Context, d time.Duration, s *system, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(parent, d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	if s != nil {
		if m := s.current(); m != nil {
			m.abort()
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		logf("a run is still blocked 30s after the timeout")
	}
	if parent.Err() != nil {
		return parent.Err()
	}
	return fmt.Errorf("timed out after %v; connection aborted", d)
}
