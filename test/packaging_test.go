package test

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// Tests of what packaging/ ships: the .deb and .rpm (built once, with
// `make deb rpm`), the systemd unit, the man pages, and the fstab form of
// the command line with its detached daemon.

// requireTools skips the test when a tool is missing, saying which
// (testenv.Skip: with CI=true it fails; .ci/run installs them all).
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.Skip(t, "needs %s (Debian packages: make, dpkg-dev, rpm, lintian, man-db, systemd)", strings.Join(missing, ", "))
}

// requireRoot skips a test that changes the system when not root
// (testenv.Skip: with CI=true it fails).
func requireRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "%s needs root", what)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "packaging", "packaging.mk")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// output runs a command and returns its stdout, failing the test with
// its stderr if it fails.
func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// The architectures `make deb rpm` packages (PKG_ARCHES), and their
// package names, as packaging.mk has them.
var (
	pkgArches = []string{"amd64", "arm64"}
	debArch   = map[string]string{"386": "i386", "ppc64le": "ppc64el"}
	rpmArch   = map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i386"}
	elfArch   = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
)

func archName(m map[string]string, goarch string) string {
	if a, ok := m[goarch]; ok {
		return a
	}
	return goarch
}

// versionRE is a version valid for both dpkg and rpm, as
// packaging/version.sh makes it: no leading v, no hyphen.
var versionRE = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`)

// Files in both packages, apart from the systemd unit and the mount
// helper, whose directories differ.
var packagedFiles = []string{
	"/etc/clamfuse/clamfuse.toml.example",
	"/usr/bin/clamfuse",
	"/usr/share/doc/clamfuse/changelog.gz",
	"/usr/share/doc/clamfuse/copyright",
	"/usr/share/man/man5/clamfuse.toml.5.gz",
	"/usr/share/man/man8/clamfuse.8.gz",
	"/usr/share/man/man8/mount.fuse.clamfuse.8.gz",
}

const example = "/etc/clamfuse/clamfuse.toml.example"

func TestPackages(t *testing.T) {
	requireTools(t, "make", "dpkg-deb", "dpkg", "rpm", "lintian", "man", "systemd-analyze")
	root := repoRoot(t)
	dist := t.TempDir()

	start := time.Now()
	cmd := exec.Command("make", "--no-print-directory", "deb", "rpm", "PKG_DIST="+dist)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb rpm: %v\n%s", err, out)
	}
	t.Logf("make deb rpm: %v", time.Since(start).Round(time.Millisecond))

	debs, _ := filepath.Glob(filepath.Join(dist, "clamfuse_*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dist, "clamfuse-*.rpm"))
	if len(debs) != len(pkgArches) || len(rpms) != len(pkgArches) {
		entries, _ := os.ReadDir(dist)
		t.Fatalf("want a .deb and an .rpm for each of %v in %s, got %q and %q (dir: %v)", pkgArches, dist, debs, rpms, entries)
	}
	version := strings.TrimPrefix(filepath.Base(debs[0]), "clamfuse_")
	version = version[:strings.LastIndexByte(version, '_')]
	if !versionRE.MatchString(version) {
		t.Fatalf("version %q is not a valid deb and rpm version", version)
	}
	for _, arch := range pkgArches {
		deb := filepath.Join(dist, "clamfuse_"+version+"_"+archName(debArch, arch)+".deb")
		rpm := filepath.Join(dist, "clamfuse-"+version+"."+archName(rpmArch, arch)+".rpm")
		for _, p := range []string{deb, rpm} {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s package: %v", arch, err)
			}
		}
		t.Run(arch, func(t *testing.T) { testPackagesOf(t, arch, deb, rpm, version) })
	}

	t.Run("ManPages", func(t *testing.T) {
		for _, page := range []string{"clamfuse.8", "clamfuse.toml.5"} {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command("man", "--warnings", "-l", filepath.Join(root, "packaging", "man", page))
			cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil || stderr.Len() > 0 || stdout.Len() < 1000 {
				t.Errorf("man --warnings -l %s: %v, %d bytes out, stderr:\n%s", page, err, stdout.Len(), stderr.String())
			}
		}
	})
}

// testPackagesOf inspects the .deb and the .rpm of one architecture; the
// package of this machine's architecture is also installed.
func testPackagesOf(t *testing.T, arch, deb, rpm, version string) {
	t.Run("DebContents", func(t *testing.T) {
		got := map[string]string{} // path -> "file" or link target
		for _, line := range strings.Split(output(t, "dpkg-deb", "-c", deb), "\n") {
			f := strings.Fields(line)
			if len(f) < 6 || strings.HasSuffix(f[5], "/") {
				continue
			}
			p := strings.TrimPrefix(f[5], ".")
			got[p] = "file"
			if len(f) == 8 && f[6] == "->" {
				got[p] = f[7]
			}
		}
		want := map[string]string{
			"/lib/systemd/system/clamfuse@.service": "file",
			"/sbin/mount.fuse.clamfuse":             "/usr/bin/clamfuse",
			"/usr/share/lintian/overrides/clamfuse": "file",
		}
		for _, p := range packagedFiles {
			want[p] = "file"
		}
		want["/usr/share/man/man8/mount.fuse.clamfuse.8.gz"] = "clamfuse.8.gz"
		for p, w := range want {
			if got[p] != w {
				t.Errorf("%s: got %q; want %q", p, got[p], w)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("unexpected file %s in the .deb", p)
			}
		}
	})

	t.Run("DebControl", func(t *testing.T) {
		ctl := t.TempDir()
		output(t, "dpkg-deb", "--control", deb, ctl)
		fields := output(t, "dpkg-deb", "--field", deb, "Package", "Version", "Architecture", "Maintainer", "Depends", "Recommends")
		for _, want := range []string{"Package: clamfuse\n", "Version: " + version + "\n", "Architecture: " + archName(debArch, arch) + "\n",
			"Maintainer: " + defaultMaintainer + "\n", "Depends: fuse3\n", "Recommends: clamav-daemon\n"} {
			if !strings.Contains(fields, want) {
				t.Errorf("control lacks %q:\n%s", want, fields)
			}
		}
		if got, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); string(got) != example+"\n" {
			t.Errorf("conffiles = %q; want %q", got, example+"\n")
		}
		checkScripts(t, filepath.Join(ctl, "postinst"), filepath.Join(ctl, "postrm"))
		if _, err := os.Stat(filepath.Join(ctl, "prerm")); err == nil {
			t.Errorf("the .deb has a prerm; only postinst and postrm (daemon-reload) are expected")
		}
	})

	t.Run("RpmContents", func(t *testing.T) {
		want := append([]string{"/etc/clamfuse", "/usr/lib/systemd/system/clamfuse@.service", "/usr/sbin/mount.fuse.clamfuse"}, packagedFiles...)
		got := strings.Fields(output(t, "rpm", "-qpl", rpm))
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("rpm -qpl:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		flags := output(t, "rpm", "-qp", "--qf", `[%{FILENAMES} %{FILEFLAGS:fflags}\n]`, rpm)
		var exampleFlags string
		for _, line := range strings.Split(flags, "\n") {
			if p, f, _ := strings.Cut(line, " "); p == example {
				exampleFlags = f
			}
		}
		if !strings.Contains(exampleFlags, "c") || !strings.Contains(exampleFlags, "n") {
			t.Errorf("%s has flags %q; want %%config(noreplace), c and n:\n%s", example, exampleFlags, flags)
		}
		if req := output(t, "rpm", "-qp", "--requires", rpm); !regexp.MustCompile(`(?m)^fuse3$`).MatchString(req) {
			t.Errorf("rpm requires:\n%s\nwant fuse3", req)
		}
		if rec := output(t, "rpm", "-qp", "--recommends", rpm); strings.TrimSpace(rec) != "clamav-daemon" {
			t.Errorf("rpm recommends %q; want clamav-daemon", rec)
		}
		if v := output(t, "rpm", "-qp", "--qf", "%{VERSION}", rpm); v != version {
			t.Errorf("rpm version %q; want %q", v, version)
		}
		meta := output(t, "rpm", "-qp", "--qf", "%{ARCH}|%{LICENSE}|%{PACKAGER}|%{OS}", rpm)
		if want := archName(rpmArch, arch) + "|Apache-2.0|" + defaultMaintainer + "|linux"; meta != want {
			t.Errorf("rpm Arch|License|Packager|OS = %q; want %q", meta, want)
		}
		checkScript(t, "rpm scripts", output(t, "rpm", "-qp", "--scripts", rpm))
	})

	t.Run("Binary", func(t *testing.T) {
		// The packaged binary is a static executable of the package's
		// architecture, and it states the version.
		x := t.TempDir()
		output(t, "dpkg-deb", "-x", deb, x)
		f, err := elf.Open(filepath.Join(x, "usr", "bin", "clamfuse"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if f.Machine != elfArch[arch] || f.Class != elf.ELFCLASS64 {
			t.Errorf("/usr/bin/clamfuse is %v %v; want %v", f.Class, f.Machine, elfArch[arch])
		}
		if interp := f.Section(".interp"); interp != nil {
			t.Errorf("/usr/bin/clamfuse has an ELF interpreter: it is not static")
		}
		bin, err := os.ReadFile(filepath.Join(x, "usr", "bin", "clamfuse"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(bin, []byte(version)) {
			t.Errorf("/usr/bin/clamfuse does not contain its version %q", version)
		}
		cp, err := os.ReadFile(filepath.Join(x, "usr", "share", "doc", "clamfuse", "copyright"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Files: *\nCopyright: the clamfuse authors\nLicense: Apache-2.0\n", "Files: fs/internal/fusefs/*\n", "\nLicense: Apache-2.0\n "} {
			if !strings.Contains(string(cp), want) {
				t.Errorf("copyright lacks %q", want)
			}
		}
	})

	t.Run("Lintian", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("lintian", "--fail-on", "error,warning", "--info", deb)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil || regexp.MustCompile(`(?m)^[EW]: `).MatchString(stdout.String()) {
			t.Errorf("lintian: %v\n%s%s", err, stdout.String(), stderr.String())
		}
	})

	if arch == runtime.GOARCH {
		t.Run("Install", func(t *testing.T) { testInstall(t, deb, version) })
	}
}

// defaultMaintainer is packaging.mk's PKG_MAINTAINER, which the test
// does not override.
const defaultMaintainer = "clamfuse maintainers <clamfuse@users.noreply.github.com>"

// checkScripts checks maintainer script files with checkScript.
func checkScripts(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("maintainer script: %v", err)
			continue
		}
		checkScript(t, filepath.Base(p), string(data))
	}
}

// checkScript checks that maintainer scripts only reload systemd: outside
// comments, they never start, restart or enable a unit, or mount.
func checkScript(t *testing.T, name, s string) {
	t.Helper()
	if !strings.Contains(s, "systemctl --system daemon-reload") {
		t.Errorf("%s do not run daemon-reload:\n%s", name, s)
	}
	if regexp.MustCompile(`(?m)^[^#]*\b(start|restart|enable|mount)\b`).MatchString(s) {
		t.Errorf("%s do more than daemon-reload:\n%s", name, s)
	}
}

// testInstall installs the .deb on this machine and checks the installed
// binary, unit, man pages and mount helper; an fstab line mounts with
// mount(8) and `umount` ends the daemon. The package is purged afterwards
// unless it was installed before.
func testInstall(t *testing.T, deb, version string) {
	requireRoot(t, "installing the .deb")
	wasInstalled := exec.Command("dpkg-query", "-W", "-f", "${Status}", "clamfuse").Run() == nil
	output(t, "dpkg", "-i", deb)
	if wasInstalled {
		t.Logf("clamfuse was installed before this test; it is left at version %s", version)
	} else {
		t.Cleanup(func() {
			if out, err := exec.Command("dpkg", "--purge", "clamfuse").CombinedOutput(); err != nil {
				t.Errorf("dpkg --purge clamfuse: %v\n%s", err, out)
			}
		})
	}

	if got := output(t, "/usr/bin/clamfuse", "version"); !strings.HasPrefix(got, "clamfuse "+version+" ") {
		t.Errorf("clamfuse version = %q; want version %s", got, version)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/clamfuse@.service")
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("systemd-analyze verify clamfuse@.service: %v\n%s", err, stderr.String())
	}
	if got := strings.TrimSpace(output(t, "man", "-w", "mount.fuse.clamfuse")); got != "/usr/share/man/man8/clamfuse.8.gz" {
		t.Errorf("man -w mount.fuse.clamfuse = %q", got)
	}

	// mount(8) with an fstab line: libmount runs /sbin/mount.fuse.clamfuse.
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	e := newFstabEnv(t, clamd)
	fstab := filepath.Join(t.TempDir(), "fstab")
	line := fmt.Sprintf("%s %s fuse.clamfuse config=%s,allow_other,_netdev,nofail 0 0\n", e.src, e.mnt, e.cfg)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "--fstab", fstab, e.mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount --fstab (%s): %v\n%s", strings.TrimSpace(line), err, out)
	}
	e.checkMounted(t, "/usr/bin/clamfuse")
}

// fstabEnv is a source directory with a clean and an infected file, an
// empty mountpoint and a config naming a private clamd.
type fstabEnv struct {
	src, mnt, cfg string
}

func newFstabEnv(t *testing.T, clamd *clamdtest.Clamd) *fstabEnv {
	t.Helper()
	dir := t.TempDir()
	e := &fstabEnv{src: filepath.Join(dir, "src"), mnt: filepath.Join(dir, "mnt"), cfg: filepath.Join(dir, "fstab.toml")}
	mounttest.MustMkdir(t, e.src)
	mounttest.MustMkdir(t, e.mnt)
	mustDo(t, os.WriteFile(filepath.Join(e.src, "clean.txt"), []byte("clean\n"), 0o644))
	mustDo(t, os.WriteFile(filepath.Join(e.src, "eicar.com"), clamdtest.EICAR(), 0o644))
	cfg := fmt.Sprintf("[clamd]\naddress = %q\ntimeout = \"20s\"\n", clamd.Address())
	mustDo(t, os.WriteFile(e.cfg, []byte(cfg), 0o644))
	t.Cleanup(func() { e.teardown(t) })
	return e
}

// teardown kills whatever daemon still serves e.mnt and detaches it.
func (e *fstabEnv) teardown(t *testing.T) {
	for _, pid := range daemonPIDs(e.mnt) {
		t.Logf("clamfuse daemon %d still running for %s; killing it", pid, e.mnt)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if mounttest.IsFuseMount(e.mnt) {
		t.Errorf("%s still mounted at cleanup; detaching", e.mnt)
		syscall.Unmount(e.mnt, syscall.MNT_DETACH)
	}
}

// daemonPIDs returns the clamfuse processes whose command line names mnt.
func daemonPIDs(mnt string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) > 1 && strings.Contains(args[0], "clamfuse") && slices.Contains(args, mnt) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// running reports whether pid is a live process: the detached daemon is
// reaped by whoever adopted it, maybe late, so a zombie counts as gone.
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// checkMounted checks a mount made by the fstab form, which has returned:
// it is live at once, scans, survives SIGHUP, and `umount` ends the
// daemon, which runs exe.
func (e *fstabEnv) checkMounted(t *testing.T, exe string) {
	t.Helper()
	if !mounttest.IsFuseMount(e.mnt) {
		t.Fatalf("%s is not mounted when the fstab form has returned", e.mnt)
	}
	pids := daemonPIDs(e.mnt)
	if len(pids) != 1 {
		t.Fatalf("want one clamfuse daemon serving %s, got %v", e.mnt, pids)
	}
	pid := pids[0]
	if got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || got != exe {
		t.Errorf("daemon %d runs %q (%v); want %s", pid, got, err, exe)
	}
	if sid, _ := syscall.Getpgid(pid); sid != pid {
		t.Errorf("daemon %d is in process group %d; want its own session", pid, sid)
	}

	if got, err := os.ReadFile(filepath.Join(e.mnt, "clean.txt")); err != nil || string(got) != "clean\n" {
		t.Errorf("reading clean.txt through the mount: %q, %v", got, err)
	}
	if _, err := os.ReadFile(filepath.Join(e.mnt, "eicar.com")); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("reading eicar.com through the mount: %v; want permission denied", err)
	}

	// ExecReload sends SIGHUP, which reloads the configuration and must
	// not end the daemon: with eicar.com excluded now, it reads once the
	// reload is done.
	cfg, err := os.ReadFile(e.cfg)
	mustDo(t, err)
	mustDo(t, os.WriteFile(e.cfg, append(cfg, "[scan]\nexclude = [\"eicar.com\"]\n"...), 0o644))
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the daemon reloading its configuration on SIGHUP", func() bool {
		_, err := os.ReadFile(filepath.Join(e.mnt, "eicar.com"))
		return err == nil
	})
	if !running(pid) || !mounttest.IsFuseMount(e.mnt) {
		t.Fatalf("SIGHUP ended the daemon or its mount")
	}

	if out, err := exec.Command("umount", e.mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v\n%s", e.mnt, err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("daemon %d still running 10s after umount", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if mounttest.IsFuseMount(e.mnt) {
		t.Errorf("%s still mounted after umount", e.mnt)
	}
}

// fstabRun runs the fstab form and returns its exit code and output.
func fstabRun(t *testing.T, env []string, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// The race-enabled binary sleeps 1s at exit by default, both parent
	// and detached child.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode(), string(out)
	default:
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		return -1, ""
	}
}

// TestFstabMount mounts the way mount(8) and mount.fuse3 do, with the
// built binary: `clamfuse SOURCE TARGET -o OPTIONS`.
func TestFstabMount(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	bin := mounttest.Binary(t)

	t.Run("Direct", func(t *testing.T) {
		e := newFstabEnv(t, clamd)
		// mount(8) gives its helpers no PATH; fusermount3 must still be found.
		code, out := fstabRun(t, []string{"PATH="}, bin, e.src, e.mnt, "-o", "rw,config="+e.cfg+",allow_other,_netdev,nofail,defaults")
		if code != 0 {
			t.Fatalf("clamfuse SRC DST -o ...: exit %d\n%s", code, out)
		}
		e.checkMounted(t, bin)
	})

	t.Run("MountFuse3", func(t *testing.T) {
		requireTools(t, "mount.fuse3")
		e := newFstabEnv(t, clamd)
		path := filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH")
		code, out := fstabRun(t, []string{"PATH=" + path}, "mount.fuse3", e.src, e.mnt, "-t", "fuse.clamfuse", "-o", "config="+e.cfg+",_netdev,nofail,allow_other")
		if code != 0 {
			t.Fatalf("mount.fuse3 -t fuse.clamfuse: exit %d\n%s", code, out)
		}
		e.checkMounted(t, bin)
	})

	t.Run("Errors", func(t *testing.T) {
		e := newFstabEnv(t, clamd)
		badCfg := filepath.Join(t.TempDir(), "bad.toml")
		if err := os.WriteFile(badCfg, []byte("[clamd]\nadress = \"/x\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name string
			args []string
			want string
		}{
			{"unknown option", []string{e.src, e.mnt, "-o", "config=" + e.cfg + ",frobnicate"}, `unknown mount option "frobnicate"`},
			{"missing config", []string{e.src, e.mnt, "-o", "config=/nonexistent/x.toml"}, "/nonexistent/x.toml"},
			{"bad config", []string{e.src, e.mnt, "-o", "config=" + badCfg}, badCfg + ":2:"},
			// Only the background child finds this out: its error
			// comes back through the status pipe.
			{"missing mountpoint", []string{e.src, e.mnt + "/none", "-o", "config=" + e.cfg}, "no such file or directory"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				code, out := fstabRun(t, nil, bin, tt.args...)
				if code != 2 || !strings.Contains(out, tt.want) {
					t.Errorf("exit %d, output %q; want 2 and %q", code, out, tt.want)
				}
				if mounttest.IsFuseMount(e.mnt) {
					t.Errorf("%s is mounted", e.mnt)
				}
				if pids := daemonPIDs(e.mnt); len(pids) > 0 {
					t.Errorf("daemons left running: %v", pids)
				}
			})
		}
	})
}

// TestPackagingServiceNotify runs `clamfuse mount` as the unit does, with
// a NOTIFY_SOCKET: READY=1 comes once the mount is live, SIGHUP (the
// unit's ExecReload) reloads without ending the mount, and SIGTERM sends
// STOPPING=1 and unmounts cleanly.
func TestPackagingServiceNotify(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)

	target := filepath.Join(dir, "mnt")
	mounttest.MustMkdir(t, target)
	type msg struct {
		text string
		live bool // the mount was live when it arrived
	}
	msgs := make(chan msg, 10)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- msg{string(buf[:n]), mounttest.IsFuseMount(target)}
		}
	}()
	recv := func(want string) msg {
		t.Helper()
		select {
		case m := <-msgs:
			if !strings.HasPrefix(m.text, want) {
				t.Fatalf("notify socket got %q; want %q first", m.text, want)
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatalf("no %q on the notify socket after 20s", want)
			return msg{}
		}
	}

	m := mounttest.Start(t, mounttest.Options{Target: target, Args: []string{"--clamd", clamd.Address()}})
	if r := recv("READY=1"); !r.live {
		t.Errorf("READY=1 was sent before the mount was live")
	}

	if err := m.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(m.Log.Lines("configuration reloaded")) == 0 { // SIGHUP reloads (ops.go)
		if time.Now().After(deadline) {
			t.Fatalf("no log line for SIGHUP after 5s:\n%s", m.Log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !m.Mounted() {
		t.Fatalf("SIGHUP ended the mount")
	}

	if err := m.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recv("STOPPING=1")
	if code, err := m.ExitCode(10 * time.Second); err != nil || code != 0 {
		t.Errorf("exit code after SIGTERM = %d, %v; want 0\n%s", code, err, m.Log.String())
	}
	if m.Mounted() {
		t.Errorf("still mounted after SIGTERM")
	}
}

// TestPackagingManPageKeys checks that clamfuse.toml(5) documents every
// key of the configuration, under its table: the keys are those that
// `clamfuse check-config` prints, which is all of them.
func TestPackagingManPageKeys(t *testing.T) {
	root := repoRoot(t)
	bin := mounttest.Binary(t)
	cfg := filepath.Join(t.TempDir(), "min.toml")
	if err := os.WriteFile(cfg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	effective := output(t, bin, "check-config", "--config", cfg)
	page, err := os.ReadFile(filepath.Join(root, "packaging", "man", "clamfuse.toml.5"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{} // table -> its .SH section of the page
	for _, sec := range strings.Split(string(page), "\n.SH ")[1:] {
		title, body, _ := strings.Cut(sec, "\n")
		sections[strings.Trim(title, "[]")] = "\n" + body
	}
	table, n := "", 0
	for _, line := range strings.Split(effective, "\n") {
		if strings.HasPrefix(line, "[") {
			table = strings.Trim(line, "[]")
			continue
		}
		key, _, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		n++
		if !strings.Contains(sections[table], "\n.BR "+key+" ") {
			t.Errorf("clamfuse.toml.5 does not document %s.%s (want a line `.BR %s \"(type, default ...)\"` under .SH [%s])", table, key, key, table)
		}
	}
	if n < 10 {
		t.Fatalf("check-config printed %d keys:\n%s", n, effective)
	}
}
