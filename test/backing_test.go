package test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
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

// backingKind makes a filesystem of one kind for a backing directory.
type backingKind struct {
	name  string
	fast  bool     // in make test; every kind runs with CLAMFUSE_SOAK=1
	tools []string // programs it needs
	// mount makes the filesystem beneath base (a directory every user may
	// traverse), unmounts it at cleanup, and returns its root; clamd is
	// for a clamfuse mount as the backing filesystem.
	mount func(t *testing.T, base string, clamd *clamdtest.Clamd) string
	// extra runs checks particular to the kind on m, whose source is
	// beneath the root.
	extra func(t *testing.T, k *core, base string)
	// quirks names the differential cases in which the filesystem itself
	// behaves unlike a local one, so that clamfuse on top of it cannot
	// behave like it on top of a local one, and why: those are run but not
	// compared, and reported as skipped.
	quirks map[string]string
}

func backingKinds() []backingKind {
	return []backingKind{
		{name: "ext4", tools: []string{"mkfs.ext4", "mount", "umount", "losetup"}, mount: loopFS("ext4")},
		{name: "xfs", fast: true, tools: []string{"mkfs.xfs", "mount", "umount", "losetup"}, mount: loopFS("xfs")},
		{name: "btrfs", fast: true, tools: []string{"mkfs.btrfs", "mount", "umount", "losetup"}, mount: loopFS("btrfs")},
		{name: "tmpfs", tools: []string{"mount", "umount"}, mount: tmpFS},
		{name: "overlay", fast: true, tools: []string{"mount", "umount"}, mount: overlayFS, extra: overlayCopyUp},
		{name: "fuse-clamfuse", tools: []string{"fusermount3"}, mount: clamfuseFUSE},
		// go-fuse's loopback, run as root, chowns each new entry to its
		// creator after making it (which clears set-ID bits and overrides
		// a set-group-ID directory's group); clamfuse makes entries as
		// their creator, so the loopback does the same below it as below
		// a native creator: no quirk.
		{name: "fuse-loopback", fast: true, tools: []string{"fusermount3"}, mount: loopbackFUSE, extra: dirRemovedBehind},
	}
}

// TestBacking runs clamfuse with its backing directory on each kind of
// filesystem of backingKinds: a few core scan checks (clean files read
// byte-identical, EICAR denied, a file changed directly in the backing
// directory scanned again), file capabilities set through the mount, and
// the POSIX differential suite (posixcmp_test.go, plus security.*
// xattrs) against a directory of that same filesystem.
//
// make test runs the kinds marked fast (xfs, btrfs, overlay and go-fuse's
// loopback; ext4 is the root filesystem of the usual test machine, which
// TestPosixCompare covers), and the differential suite without
// readdir_large (22 s a kind); CLAMFUSE_SOAK=1 (make soak) runs all of it
// on every kind.
func TestBacking(t *testing.T) {
	mounttest.Require(t)
	fsopBinary(t)
	soak := os.Getenv("CLAMFUSE_SOAK") != ""
	cases := append(posixCases(), posixCase{name: "security_xattrs", run: caseSecurityXattrs})
	if !soak {
		cases = slices.DeleteFunc(cases, func(c posixCase) bool { return c.name == "readdir_large" })
	}
	for _, kind := range backingKinds() {
		if !kind.fast && !soak {
			t.Logf("%s: only with CLAMFUSE_SOAK=1 (make soak)", kind.name)
			continue
		}
		t.Run(kind.name, func(t *testing.T) {
			requireBackingTools(t, kind)
			start := time.Now()
			// Short paths: a case describes a value over 64 bytes by its
			// hash, and the native and mount paths must both stay under.
			base := openDir(t, "cfb-"+kind.name)
			// A clamd of its own, stopped before the filesystem is
			// unmounted: a clamd that was passed a descriptor (FILDES)
			// by a clamfuse stopped mid-scan was seen to keep it open
			// for seconds, which keeps the filesystem busy.
			clamd := clamdtest.New(t, clamdtest.Options{})
			root := kind.mount(t, base, clamd)
			t.Cleanup(func() { clamd.Stop() }) // before the unmount
			var st unix.Statfs_t
			mustDo(t, unix.Statfs(root, &st))
			t.Logf("%s: backing filesystem type %#x (made in %v)", kind.name, st.Type, time.Since(start).Round(time.Millisecond))
			native, src, srcBig := filepath.Join(root, "native"), filepath.Join(root, "src"), filepath.Join(root, "srcbig")
			mnt, mntBig := filepath.Join(base, "mnt"), filepath.Join(base, "mntbig")
			for _, d := range []string{native, src, srcBig, mnt, mntBig} {
				mustDo(t, os.MkdirAll(d, 0o755)) // an overlay's src/ may be there
			}
			m, big := posixMounts(t, clamd,
				mounttest.Options{Source: src, Target: mnt, Args: []string{"--allow-other"}},
				mounttest.Options{Source: srcBig, Target: mntBig})
			k := &core{clamd: clamd, m: m}
			t.Run("CleanFilesByteIdentical", k.testCleanSizes)
			t.Run("InfectedDenied", k.testInfectedDenied)
			t.Run("ModifiedBehindTheMountRescanned", k.testModifiedBehind)
			t.Run("FileCapabilities", func(t *testing.T) { testFileCapabilities(t, m, native) })
			if kind.extra != nil {
				t.Run("Extra", func(t *testing.T) { kind.extra(t, k, base) })
			}
			t.Run("Posix", func(t *testing.T) {
				var compared []posixCase
				for _, c := range cases {
					if why, ok := kind.quirks[c.name]; ok {
						t.Run(c.name, func(t *testing.T) {
							nroot, mroot := filepath.Join(native, c.name), m.Path(c.name)
							mustDo(t, os.Mkdir(nroot, 0o755))
							mustDo(t, os.Mkdir(mroot, 0o755))
							_, _ = c.run(nroot)
							m.Within(t, 2*time.Minute, c.name, func() { _, _ = c.run(mroot) })
							t.Skipf("known quirk of %s, not compared: %s", kind.name, why)
						})
						continue
					}
					compared = append(compared, c)
				}
				posixCompare(t, native, m, big, compared)
			})
			t.Logf("%s: %v in all", kind.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// requireBackingTools skips the kind when a program it needs, or loop
// devices, are missing; with CI set it fails instead.
func requireBackingTools(t *testing.T, kind backingKind) {
	t.Helper()
	var missing []string
	for _, tool := range kind.tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if slices.Contains(kind.tools, "losetup") {
		if _, err := os.Stat("/dev/loop-control"); err != nil {
			missing = append(missing, "/dev/loop-control (loop devices)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("%s backing: needs %s (Debian packages e2fsprogs, xfsprogs, btrfs-progs, mount, fuse3)", kind.name, strings.Join(missing, ", "))
	testenv.Skip(t, "%s", msg)
}

// mustRun runs a command, failing t with its output if it fails.
func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// unmountAtCleanup unmounts dir at cleanup, so that nothing stays
// mounted even when the test fails. A file may still be open there for a
// moment (clamd finishing a scan clamfuse gave up on when it stopped):
// it retries for a few seconds, then says who holds what and detaches it
// lazily.
func unmountAtCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := unix.Unmount(dir, 0)
			if err == nil {
				return
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				t.Logf("unmount %s: %v; open there: %v; detaching it lazily", dir, err, openBeneath(dir))
				if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
					t.Errorf("unmount %s: %v", dir, err)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// openBeneath lists the processes with a descriptor open beneath dir.
func openBeneath(dir string) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		fds, err := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
				comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				out = append(out, fmt.Sprintf("%s (%s): %s", p.Name(), strings.TrimSpace(string(comm)), target))
			}
		}
	}
	return out
}

// loopFS makes a filesystem of type fstype in a sparse 512 MiB image file
// and mounts it with a loop device (which umount frees).
func loopFS(fstype string) func(t *testing.T, base string, _ *clamdtest.Clamd) string {
	return func(t *testing.T, base string, _ *clamdtest.Clamd) string {
		t.Helper()
		img, dir := filepath.Join(base, fstype+".img"), filepath.Join(base, "fs")
		mustDo(t, os.Mkdir(dir, 0o755))
		mustRun(t, "truncate", "-s", "512M", img)
		switch fstype {
		case "ext4":
			mustRun(t, "mkfs.ext4", "-q", "-F", img)
		case "xfs":
			mustRun(t, "mkfs.xfs", "-q", "-f", img)
		case "btrfs":
			mustRun(t, "mkfs.btrfs", "-q", "-f", img)
		default:
			t.Fatalf("no mkfs for %s", fstype)
		}
		mustRun(t, "mount", "-t", fstype, "-o", "loop", img, dir)
		unmountAtCleanup(t, dir)
		return dir
	}
}

func tmpFS(t *testing.T, base string, _ *clamdtest.Clamd) string {
	t.Helper()
	dir := filepath.Join(base, "fs")
	mustDo(t, os.Mkdir(dir, 0o755))
	mustDo(t, unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1g,mode=0755"))
	unmountAtCleanup(t, dir)
	return dir
}

// overlayFS mounts an overlay of a lower and an upper directory; the lower
// one holds lower/clean.txt and lower/eicar.com for overlayCopyUp.
func overlayFS(t *testing.T, base string, _ *clamdtest.Clamd) string {
	t.Helper()
	lower, upper, work, dir := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "fs")
	for _, d := range []string{lower, upper, work, dir} {
		mustDo(t, os.Mkdir(d, 0o755))
	}
	mustDo(t, os.Mkdir(filepath.Join(lower, "src"), 0o755))
	mustDo(t, os.Mkdir(filepath.Join(lower, "src", "lower"), 0o755))
	putFile(t, filepath.Join(lower, "src", "lower", "clean.txt"), pseudoRandom(32<<10, 401))
	putFile(t, filepath.Join(lower, "src", "lower", "eicar.com"), clamdtest.EICAR())
	mustDo(t, unix.Mount("overlay", dir, "overlay", 0, fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)))
	unmountAtCleanup(t, dir)
	return dir
}

// overlayCopyUp: files of the lower layer are judged like any other, and
// one changed through the overlay (copied up: another inode, on the upper
// layer) is judged again.
func overlayCopyUp(t *testing.T, k *core, base string) {
	clean := pseudoRandom(32<<10, 401)
	wantSame(t, "lower/clean.txt", readVia(t, k.m, k.m.Path("lower/clean.txt")), clean)
	wantEACCES(t, k.m, k.m.Path("lower/eicar.com"))
	f, err := os.OpenFile(k.m.Backing("lower/clean.txt"), os.O_WRONLY|os.O_APPEND, 0)
	mustDo(t, err)
	_, err = f.Write(clamdtest.Marker())
	mustDo(t, err)
	mustDo(t, f.Close())
	if _, err := os.Stat(filepath.Join(base, "upper", "src", "lower", "clean.txt")); err != nil {
		t.Fatalf("the append did not copy the file up: %v", err)
	}
	wantEACCES(t, k.m, k.m.Path("lower/clean.txt"))
}

// dirRemovedBehind: a directory the kernel still holds through the mount
// (O_PATH) is removed behind the mount, and another made there; on a
// backing filesystem that does not pin the inodes clamfuse's descriptors
// are of (FUSE: go-fuse's loopback over ext4), the new directory gets the
// removed one's inode number at once. It is another directory all the
// same: clamfuse must not hand out the removed one's node and descriptor
// for it, through which every name in it was missing (ENOENT). Each step
// is the new directory's as a user sees it.
func dirRemovedBehind(t *testing.T, k *core, _ string) {
	mustDo(t, os.Mkdir(k.m.Backing("g"), 0o755))
	// A name made in g through the mount: clamfuse keeps g's descriptor.
	mustDo(t, os.Mkdir(k.m.Path("g/s"), 0o755))
	mustDo(t, os.Remove(k.m.Path("g/s")))
	held, err := unix.Open(k.m.Path("g"), unix.O_PATH|unix.O_CLOEXEC, 0)
	mustDo(t, err)
	defer unix.Close(held)
	var old, st unix.Stat_t
	mustDo(t, unix.Fstat(held, &old))
	mustDo(t, os.Remove(k.m.Backing("g")))
	mustDo(t, os.Mkdir(k.m.Backing("h"), 0o755))
	mustDo(t, os.WriteFile(k.m.Backing("h/f"), []byte("in h"), 0o644))
	mustDo(t, unix.Stat(k.m.Backing("h"), &st))
	if st.Ino != old.Ino {
		t.Logf("the new directory got inode %d, the removed one had %d: the reuse this checks did not happen", st.Ino, old.Ino)
	}
	mustDo(t, os.Mkdir(k.m.Path("h/x"), 0o755))
	names, err := os.ReadDir(k.m.Path("h"))
	mustDo(t, err)
	if len(names) != 2 || names[0].Name() != "f" || names[1].Name() != "x" {
		t.Errorf("h lists %v; want f and x", names)
	}
	wantSame(t, "h/f", readVia(t, k.m, k.m.Path("h/f")), []byte("in h"))
}

// clamfuseFUSE mounts another clamfuse (allow_other) of a directory
// beneath base, one that scans nothing (scan.exclude = ["*"]): a
// passthrough FUSE filesystem. (One that scans would judge each file
// first: an infected file would be denied to the outer clamfuse as it
// opens it, which denies it in turn, but logs neither the signature nor
// who asked; the inner clamfuse logs the signature, with the outer one as
// the opener.)
func clamfuseFUSE(t *testing.T, base string, clamd *clamdtest.Clamd) string {
	t.Helper()
	orig, dir := filepath.Join(base, "orig"), filepath.Join(base, "fs")
	mustDo(t, os.Mkdir(orig, 0o755))
	mustDo(t, os.Mkdir(dir, 0o755))
	startChecked(t, mounttest.Options{Source: orig, Target: dir, Args: []string{"--allow-other"},
		Config: fmt.Sprintf("[clamd]\naddress = %q\n[scan]\nexclude = [\"*\"]\n", clamd.Address())})
	return dir
}

var loopbackTool builtTool

// builtTool is a helper program the tests build once per test binary.
type builtTool struct {
	once sync.Once
	path string
	err  error
}

// get builds the tool name with build (given the binary's path to write)
// the first time, into a temporary directory, and returns its path.
func (b *builtTool) get(t *testing.T, name string, build func(out string) *exec.Cmd) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "clamfuse-"+name)
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		if out, err := build(b.path).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building %s: %v\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// loopbackFUSE mounts go-fuse's loopback example (a passthrough FUSE
// filesystem; go-fuse is a dependency of the tests already) of a
// directory beneath base, with allow_other, and stops it at cleanup.
func loopbackFUSE(t *testing.T, base string, _ *clamdtest.Clamd) string {
	t.Helper()
	loopbackPath := loopbackTool.get(t, "loopback", func(out string) *exec.Cmd {
		return exec.Command("go", "build", "-o", out, "github.com/hanwen/go-fuse/v2/example/loopback")
	})
	orig, dir := filepath.Join(base, "orig"), filepath.Join(base, "fs")
	mustDo(t, os.Mkdir(orig, 0o755))
	mustDo(t, os.Mkdir(dir, 0o755))
	cmd := exec.Command(loopbackPath, "-allow-other", "-q", dir, orig)
	log, exited := startServer(t, cmd)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // it unmounts and exits
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("go-fuse loopback did not exit on SIGTERM; killing it")
			_ = cmd.Process.Kill()
			<-exited
		}
		if mounttest.IsFuseMount(dir) {
			// go-fuse's loopback unmounts on SIGTERM, but gives up when
			// the mount is still busy (clamd or the clamfuse above it
			// letting go of a descriptor a moment late): a neighbour's
			// behaviour, not clamfuse's; detach it.
			t.Logf("%s still mounted after the loopback exited; detaching it", dir)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	waitFuseMount(t, dir, "go-fuse loopback", exited, log)
	return dir
}

// testFileCapabilities: setcap through the mount stores the file
// capability (security.capability) on the backing file, and getcap shows
// it; it takes no effect on the mount, which is nosuid, where it does on
// the backing filesystem.
func testFileCapabilities(t *testing.T, m *mounttest.Mount, native string) {
	for _, tool := range []string{"setcap", "getcap"} {
		if _, err := exec.LookPath(tool); err != nil {
			msg := fmt.Sprintf("needs %s (Debian package libcap2-bin)", tool)
			testenv.Skip(t, "%s", msg)
		}
	}
	cat, err := os.ReadFile("/bin/cat")
	mustDo(t, err)
	mustDo(t, os.WriteFile(m.Path("capcat"), cat, 0o755))
	mustDo(t, os.WriteFile(filepath.Join(native, "capcat"), cat, 0o755))
	for _, p := range []string{m.Path("capcat"), filepath.Join(native, "capcat")} {
		var out []byte
		m.Within(t, time.Minute, "setcap", func() { out, err = exec.Command("setcap", "cap_net_raw+ep", p).CombinedOutput() })
		if err != nil {
			t.Fatalf("setcap cap_net_raw+ep %s: %v\n%s", p, err, out)
		}
	}
	if v, err := unix.Lgetxattr(m.Backing("capcat"), "security.capability", make([]byte, 64)); err != nil || v < 20 {
		t.Errorf("security.capability of the backing file: %d bytes, %v; want the capability set through the mount", v, err)
	}
	var out []byte
	m.Within(t, time.Minute, "getcap", func() { out, err = exec.Command("getcap", m.Path("capcat")).CombinedOutput() })
	if err != nil || !strings.Contains(string(out), "cap_net_raw=ep") {
		t.Errorf("getcap through the mount: %v, %q; want cap_net_raw=ep", err, out)
	}
	// Run as nobody, cat reads its own capabilities: none on the nosuid
	// mount.
	capEff := func(p string) string {
		cmd := exec.Command(p, "/proc/self/status")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var out []byte
		var err error
		m.Within(t, time.Minute, "exec "+p, func() { out, err = cmd.CombinedOutput() })
		if err != nil {
			t.Fatalf("%s as nobody: %v\n%s", p, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("no CapEff in %s's output:\n%s", p, out)
		return ""
	}
	if got := capEff(m.Path("capcat")); got != "0000000000000000" {
		t.Errorf("capcat through the (nosuid) mount runs with capabilities %s; want none", got)
	}
	t.Logf("the same file with cap_net_raw+ep on the backing filesystem itself runs with CapEff %s", capEff(filepath.Join(native, "capcat")))
}

// caseSecurityXattrs: security.* attributes, as root and as another user,
// and the file capability a write removes; the outcome is the backing
// filesystem's.
func caseSecurityXattrs(root string) (string, error) {
	var r rec
	f := filepath.Join(root, "f")
	mustWrite(f, "f")
	mustDoP(os.Chmod(f, 0o666))
	list := func(label string) {
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(f, buf)
		if r.do(label, err) {
			var names []string
			for _, s := range strings.Split(string(buf[:n]), "\x00") {
				if strings.HasPrefix(s, "security.") && s != "security.selinux" {
					names = append(names, s)
				}
			}
			sort.Strings(names)
			r.val("security names", "%q", names)
		}
	}
	get := func(label, name string) {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(f, name, buf)
		if r.do(label, err) {
			r.val("value", "%q", buf[:n])
		}
	}
	r.do("set security.clamfuse-test", unix.Lsetxattr(f, "security.clamfuse-test", []byte("v"), 0))
	get("get security.clamfuse-test", "security.clamfuse-test")
	list("list")
	r.do("replace", unix.Lsetxattr(f, "security.clamfuse-test", []byte("w"), unix.XATTR_REPLACE))
	get("get security.clamfuse-test", "security.clamfuse-test")
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	r.val("set as nobody", "%s", fsop(nobody, "setxattr", f, "security.clamfuse-test", "x"))
	r.val("get as nobody", "%s", fsop(nobody, "getxattr", f, "security.clamfuse-test"))
	r.do("remove", unix.Lremovexattr(f, "security.clamfuse-test"))
	list("list")
	out, err := exec.Command("setcap", "cap_net_raw+ep", f).CombinedOutput()
	r.do("setcap", err)
	r.val("setcap output", "%q", bytes.TrimSpace(out))
	out, _ = exec.Command("getcap", f).Output()
	r.val("getcap", "%q", strings.ReplaceAll(string(bytes.TrimSpace(out)), root, "ROOT"))
	list("list")
	fd, err := unix.Open(f, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if r.do("open", err) {
		_, err = unix.Write(fd, []byte("x"))
		r.do("write (kills the file capability)", err)
		unix.Close(fd)
	}
	get("get security.capability", "security.capability")
	r.val("set security.capability as nobody (malformed)", "%s", fsop(nobody, "setxattr", f, "security.capability", "x"))
	list("list")
	return r.done()
}
