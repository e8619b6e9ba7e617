package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// Issue #10: clamfuse, root with allow_other, in front of two ordinary
// users A and B on a shared directory. Each attack observed there, as an
// attacker would try it: A works through the mount while the names in the
// backing directory change under clamfuse (B, or anyone with access to
// the backing directory, can do that), and nothing of B's or root's may be
// read, truncated, chmoded, chowned or deleted by A through clamfuse.

const bSecret = "B's secret bytes"

// sharedLayout is a mount of base/src on base/mnt, with base/native beside
// for native comparisons, and two users A and B sharing a group.
type sharedLayout struct {
	base, src, mnt, native string
	a, b                   testUser
	shared                 uint32 // a group A and B are both in
	m                      *mounttest.Mount
}

// newShared mounts with allow_other (as a real deployment) and the extra
// config cfg, if any.
func newShared(t *testing.T, cfg string) *sharedLayout {
	t.Helper()
	mounttest.Require(t)
	fsopBinary(t)
	l := &sharedLayout{base: openDir(t, "clamfuse-callers")}
	l.shared = newTestGroup(t)
	l.a = newTestUser(t, l.shared)
	l.b = newTestUser(t, l.shared)
	l.src, l.mnt, l.native = filepath.Join(l.base, "src"), filepath.Join(l.base, "mnt"), filepath.Join(l.base, "native")
	for _, d := range []string{l.src, l.mnt, l.native} {
		mustDo(t, os.Mkdir(d, 0o755))
	}
	clamd := clamdtest.New(t, clamdtest.Options{})
	l.m = startChecked(t, mounttest.Options{Source: l.src, Target: l.mnt, Config: cfg,
		Args: []string{"--allow-other", "--clamd", clamd.Address(), "--timeout", "30s"}})
	return l
}

// mkFile writes p with data, owned by uid:gid, with mode.
func mkFile(t *testing.T, p, data string, mode uint32, uid, gid uint32) {
	t.Helper()
	mustDo(t, os.WriteFile(p, []byte(data), 0o600))
	mustDo(t, os.Lchown(p, int(uid), int(gid)))
	mustDo(t, unix.Chmod(p, mode))
}

func mkDir(t *testing.T, p string, mode uint32, uid, gid uint32) {
	t.Helper()
	mustDo(t, os.Mkdir(p, 0o700))
	mustDo(t, os.Lchown(p, int(uid), int(gid)))
	mustDo(t, unix.Chmod(p, mode))
}

// victim is what must not change about a file: everything but its names
// and its access and change times.
type victim struct {
	ino        uint64
	uid, gid   uint32
	mode       uint32
	nlink      uint64
	size       int64
	mtime      unix.Timespec
	data       string
	userXattrs string
}

func snapVictim(t *testing.T, p string) victim {
	t.Helper()
	var st unix.Stat_t
	mustDo(t, unix.Lstat(p, &st))
	b, err := os.ReadFile(p)
	mustDo(t, err)
	buf := make([]byte, 4096)
	n, _ := unix.Llistxattr(p, buf)
	return victim{st.Ino, st.Uid, st.Gid, st.Mode, uint64(st.Nlink), st.Size, st.Mtim, string(b), string(buf[:max(n, 0)])}
}

// findVictim finds the inode of want among the entries of dir and checks
// that nothing about it changed.
func findVictim(t *testing.T, dir string, want victim, what string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	mustDo(t, err)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Ino != want.ino {
			continue
		}
		if got := snapVictim(t, p); got != want {
			t.Errorf("%s (now %s) changed through the mount:\n  before %+v\n  after  %+v", what, e.Name(), want, got)
		}
		return
	}
	t.Errorf("%s (inode %d) is gone from %s", what, want.ino, dir)
}

// race runs fn in a loop in the background until the returned stop is
// called; stop returns how many rounds ran.
func race(t *testing.T, fn func() error) (stop func() int) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	rounds := 0
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := fn(); err != nil && firstErr == nil {
				firstErr = err
			}
			rounds++
		}
	}()
	return func() int {
		close(done)
		wg.Wait()
		if firstErr != nil {
			t.Logf("racer: first error %v", firstErr)
		}
		return rounds
	}
}

// attack runs fsop as u: "repeat N MS OP ARGS..." in its own process.
func attack(u testUser, tries int, budget time.Duration, op ...string) string {
	return fsop(u.cred, append([]string{"repeat", strconv.Itoa(tries), strconv.FormatInt(budget.Milliseconds(), 10)}, op...)...)
}

// TestHostileCreateExistingRace (issue #10, item 1): while B's 0600 file,
// and a root-owned 0644 file, are renamed away and back in a loop in the
// backing directory, A opens their names through the mount with O_CREAT
// (O_RDONLY, and O_WRONLY|O_TRUNC) over and over. When the CREATE finds
// the name taken, clamfuse must open the existing file as A, so A never
// reads B's bytes and never truncates root's file.
func TestHostileCreateExistingRace(t *testing.T) {
	pm := ptModes[0] // passthrough (auto), the default; make test's time
	l := newShared(t, "[mount]\n"+pm.toml+"\n")
	pm.check(t, l.m)
	shared := filepath.Join(l.src, "shared")
	mkDir(t, shared, 0o777, 0, 0)
	vic, rootf := filepath.Join(shared, "vic"), filepath.Join(shared, "rootfile")
	mkFile(t, vic, bSecret, 0o600, l.b.uid, l.b.ga)
	mkFile(t, rootf, "root's data, not to be truncated", 0o644, 0, 0)
	wantVic, wantRoot := snapVictim(t, vic), snapVictim(t, rootf)

	away := func(p string) func() error {
		return func() error {
			if err := os.Rename(p, p+".away"); err != nil {
				return err
			}
			return os.Rename(p+".away", p)
		}
	}
	stopVic, stopRoot := race(t, away(vic)), race(t, away(rootf))
	var reads, truncs string
	var wg sync.WaitGroup
	wg.Add(2)
	l.m.Within(t, 2*time.Minute, "O_CREAT opens racing renames", func() {
		go func() {
			defer wg.Done()
			reads = attack(l.a, 3000, 20*time.Second, "creat-read", l.m.Path("shared/vic"))
		}()
		go func() {
			defer wg.Done()
			truncs = attack(l.a, 3000, 20*time.Second, "creat-trunc", l.m.Path("shared/rootfile"))
		}()
		wg.Wait()
	})
	t.Logf("%d renames of vic, %d of rootfile", stopVic(), stopRoot())
	t.Logf("A's O_CREAT|O_RDONLY opens of vic: %s", reads)
	t.Logf("A's O_CREAT|O_WRONLY|O_TRUNC opens of rootfile: %s", truncs)
	if strings.Contains(reads, "secret") {
		t.Errorf("A read B's 0600 file through an O_CREAT open: %s", reads)
	}
	for _, out := range []string{reads, truncs} {
		if !strings.HasPrefix(out, "ok tries=") {
			t.Fatalf("attacker: %s", out)
		}
	}
	// Whatever A created while a name was away is A's; the victims must
	// be exactly as they were.
	findVictim(t, shared, wantVic, "B's 0600 file")
	findVictim(t, shared, wantRoot, "root's 0644 file")
}

// TestHostileNameSwapSetattr (issue #10, item 2): A changes its own file
// through the mount (chmod, chown to a group of its own, truncate, times,
// an xattr, and reads it) while the backing directory swaps its name with
// B's 0600 file, as fast as it can. Nothing of B's may change, and A never
// reads B's bytes.
func TestHostileNameSwapSetattr(t *testing.T) {
	l := newShared(t, "")
	shared := filepath.Join(l.src, "shared")
	mkDir(t, shared, 0o777, 0, 0)
	mine, vic := filepath.Join(shared, "mine"), filepath.Join(shared, "vic")
	mkFile(t, mine, "A's own data", 0o644, l.a.uid, l.a.ga)
	mkFile(t, vic, bSecret, 0o600, l.b.uid, l.b.ga)
	want := snapVictim(t, vic)

	stop := race(t, func() error {
		return unix.Renameat2(unix.AT_FDCWD, mine, unix.AT_FDCWD, vic, unix.RENAME_EXCHANGE)
	})
	p := l.m.Path("shared/mine")
	ops := [][]string{
		{"chmod", p, "0666"},
		{"chown", p, "-1", strconv.FormatUint(uint64(l.shared), 10)},
		{"truncate", p, "0"},
		{"touch-at", p, "1000", "5"},
		{"touch", p},
		{"setxattr", p, "user.attack", "x"},
		{"cat", p},
	}
	outs := make([]string, len(ops))
	var wg sync.WaitGroup
	l.m.Within(t, 2*time.Minute, "setattr racing name swaps", func() {
		for i, op := range ops {
			wg.Add(1)
			go func() { defer wg.Done(); outs[i] = attack(l.a, 2000, 15*time.Second, op...) }()
		}
		wg.Wait()
	})
	t.Logf("%d exchanges", stop())
	for i, op := range ops {
		t.Logf("A's %s: %s", op[0], outs[i])
		if !strings.HasPrefix(outs[i], "ok tries=") {
			t.Errorf("attacker %s: %s", op[0], outs[i])
		}
	}
	if strings.Contains(outs[len(outs)-1], "secret") {
		t.Errorf("A read B's 0600 file: %s", outs[len(outs)-1])
	}
	findVictim(t, shared, want, "B's 0600 file")
}

// TestHostileNameSwapCreate (issue #10, item 2): A creates and removes
// files and directories through the mount, in a sticky shared directory,
// while the backing directory swaps the new name with B's file. clamfuse
// used to chown and chmod the new entry by name after creating it, and to
// unlink it by name when that failed: B's file was chowned to A, chmoded,
// or deleted. Nothing of B's may change or go.
func TestHostileNameSwapCreate(t *testing.T) {
	l := newShared(t, "")
	shared := filepath.Join(l.src, "shared")
	mkDir(t, shared, 0o1777, 0, 0)
	vic := filepath.Join(shared, "vic")
	mkFile(t, vic, bSecret, 0o600, l.b.uid, l.b.ga)
	want := snapVictim(t, vic)
	stop := race(t, func() error {
		err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(shared, "new"), unix.AT_FDCWD, vic, unix.RENAME_EXCHANGE)
		if err == syscall.ENOENT {
			return nil // nothing to swap with right now
		}
		return err
	})
	var out string
	l.m.Within(t, 2*time.Minute, "creation racing name swaps", func() {
		out = attack(l.a, 3000, 20*time.Second, "churn", l.m.Path("shared/new"))
	})
	t.Logf("%d swap attempts; A's create/unlink/mkdir/rmdir: %s", stop(), out)
	if !strings.HasPrefix(out, "ok tries=") {
		t.Fatalf("attacker: %s", out)
	}
	findVictim(t, shared, want, "B's 0600 file")
	// What A created is A's.
	ents, err := os.ReadDir(shared)
	mustDo(t, err)
	for _, e := range ents {
		var st unix.Stat_t
		mustDo(t, unix.Lstat(filepath.Join(shared, e.Name()), &st))
		if st.Ino != want.ino && st.Uid != l.a.uid {
			t.Errorf("%s, made by A through the mount, belongs to %d:%d", e.Name(), st.Uid, st.Gid)
		}
	}
}

// setfacl runs setfacl(1) with args.
func setfacl(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("setfacl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("setfacl %v: %v\n%s (Debian package acl)", args, err, out)
	}
}

// TestUsersACLDeny (issue #10, item 3): an ACL entry that denies A a file
// or a directory its mode bits would open to everyone is enforced through
// the mount as natively: no read of the file, no listing of the directory,
// no way through it, even when root has just walked the same paths
// through the mount and the kernel holds their entries in its cache (it
// must check the ACLs itself: FUSE_POSIX_ACL).
func TestUsersACLDeny(t *testing.T) {
	l := newShared(t, "[mount]\nattr_timeout = \"1h\"\n")
	requirePosixACL(t, l)
	a := strconv.FormatUint(uint64(l.a.uid), 10)
	for _, root := range []string{l.native, l.src} {
		p := func(s string) string { return filepath.Join(root, s) }
		mkFile(t, p("aclfile"), "denied by an ACL", 0o644, 0, 0)
		setfacl(t, "-m", "u:"+a+":---", p("aclfile"))
		mkDir(t, p("acldir"), 0o755, 0, 0)
		mkFile(t, p("acldir/f"), "behind a directory denied by an ACL", 0o644, 0, 0)
		mkDir(t, p("acldir/sub"), 0o755, 0, 0)
		mkFile(t, p("acldir/sub/f"), "deeper", 0o644, 0, 0)
		setfacl(t, "-m", "u:"+a+":---", p("acldir"))
		mkFile(t, p("open"), "no ACL", 0o644, 0, 0)
	}
	// Root walks every path through the mount first.
	for _, p := range []string{"aclfile", "acldir/f", "acldir/sub/f", "open"} {
		if got := fsop(nil, "read", l.m.Path(p)); !strings.HasPrefix(got, "ok ") {
			t.Fatalf("root's read of %s through the mount: %s", p, got)
		}
	}
	steps := []fsopArgs{
		{"read", "@aclfile"},
		{"read", "@open"},
		{"list", "@acldir"},
		{"read", "@acldir/f"},
		{"read", "@acldir/sub/f"},
		{"lstat", "@acldir/f"},
		{"create", "@acldir/new", "0644"},
	}
	compareAs(t, l, l.a, steps)
}

// requirePosixACL fails the test unless the kernel granted FUSE_POSIX_ACL
// to the mount (every kernel since 4.9 does).
func requirePosixACL(t *testing.T, l *sharedLayout) {
	t.Helper()
	l.m.WaitLogLines(t, 10*time.Second, "FUSE_POSIX_ACL")
	if !strings.Contains(l.m.Log.String(), "FUSE_POSIX_ACL granted") {
		t.Fatalf("the kernel did not grant FUSE_POSIX_ACL:\n%s", l.m.Log.String())
	}
}

// TestUsersACLGrant (issue #10, item 3): what an ACL grants beyond the
// mode bits is granted through the mount as natively (a group entry on a
// 0640 file, on a 0750 directory, a user entry for writing); a default
// ACL decides the mode of what is created in its directory in place of
// the umask; and an ACL A sets through the mount on its own file grants B
// access.
func TestUsersACLGrant(t *testing.T) {
	pm := ptModes[0] // passthrough (auto), the default; make test's time
	l := newShared(t, "[mount]\n"+pm.toml+"\n")
	pm.check(t, l.m)
	requirePosixACL(t, l)
	a := strconv.FormatUint(uint64(l.a.uid), 10)
	b := strconv.FormatUint(uint64(l.b.uid), 10)
	g := strconv.FormatUint(uint64(l.shared), 10)
	for _, root := range []string{l.native, l.src} {
		p := func(s string) string { return filepath.Join(root, s) }
		mkFile(t, p("grantfile"), "granted to a group by an ACL", 0o640, 0, 0)
		setfacl(t, "-m", "g:"+g+":r--", p("grantfile"))
		mkDir(t, p("grantdir"), 0o750, 0, 0)
		mkFile(t, p("grantdir/f"), "inside a directory granted by an ACL", 0o644, 0, 0)
		setfacl(t, "-m", "g:"+g+":r-x", p("grantdir"))
		mkFile(t, p("grantw"), "writable for A by an ACL", 0o644, 0, 0)
		setfacl(t, "-m", "u:"+a+":rw-", p("grantw"))
		mkDir(t, p("dacl"), 0o777, 0, 0)
		setfacl(t, "-d", "-m", "u::rwx,g::rwx,o::rwx", p("dacl"))
		mkDir(t, p("rw"), 0o777, 0, 0)
	}
	steps := []fsopArgs{
		{"read", "@grantfile"},
		{"list", "@grantdir"},
		{"read", "@grantdir/f"},
		{"append", "@grantw", "+A"},
		{"cat", "@grantw"},
		{"getxattr", "@grantfile", "system.posix_acl_access"},
		{"with-umask", "077", "create", "@dacl/f", "0666"},
		{"lstat", "@dacl/f"},
		{"getxattr", "@dacl/f", "system.posix_acl_access"},
		{"with-umask", "077", "mkdir", "@dacl/d", "0777"},
		{"lstat", "@dacl/d"},
		{"getxattr", "@dacl/d", "system.posix_acl_default"},
		{"with-umask", "077", "create", "@rw/f", "0666"},
		{"lstat", "@rw/f"},
		{"write", "@rw/f", "A's, readable by B through A's ACL"},
		{"chmod", "@rw/f", "0600"},
	}
	compareAs(t, l, l.a, steps)
	// A grants B read access to its 0600 file with setfacl, through the
	// mount and natively.
	for _, root := range []string{l.native, l.mnt} {
		cmd := exec.Command("setfacl", "-m", "u:"+b+":r--", filepath.Join(root, "rw/f"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: l.a.cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("A's setfacl in %s: %v\n%s", root, err, out)
		}
	}
	compareAs(t, l, l.b, []fsopArgs{
		{"cat", "@rw/f"},
		{"lstat", "@rw/f"},
		{"write", "@rw/f", "B may not write"},
	})
	// A's chmod narrows the ACL's mask: B's access goes, and the ACL read
	// back through the mount is the narrowed one, not the kernel's old copy.
	compareAs(t, l, l.a, []fsopArgs{
		{"chmod", "@rw/f", "0600"},
		{"getxattr", "@rw/f", "system.posix_acl_access"},
	})
	compareAs(t, l, l.b, []fsopArgs{
		{"cat", "@rw/f"},
		{"lstat", "@rw/f"},
	})
}

// compareAs runs steps as u on the native tree and through the mount and
// requires the same outcome for each.
func compareAs(t *testing.T, l *sharedLayout, u testUser, steps []fsopArgs) {
	t.Helper()
	for _, s := range steps {
		want := strings.ReplaceAll(fsop(u.cred, s.expand(l.native)...), l.native, "ROOT")
		var got string
		l.m.Within(t, time.Minute, strings.Join(s, " "), func() { got = fsop(u.cred, s.expand(l.mnt)...) })
		got = strings.ReplaceAll(got, l.mnt, "ROOT")
		if got != want {
			t.Errorf("%s as uid %d: native %s, through the mount %s", strings.Join(s, " "), u.uid, want, got)
		} else {
			t.Logf("%s: %s", strings.Join(s, " "), got)
		}
	}
}

// TestUsersBackingChangesSeenAtOnce (issue #10, item 6): with a long
// attribute timeout, a chmod or an ACL in the backing directory that takes
// A's access away denies A's very next open through the mount: the
// backing filesystem checks each open as A.
func TestUsersBackingChangesSeenAtOnce(t *testing.T) {
	l := newShared(t, "[mount]\nattr_timeout = \"1h\"\n")
	mkFile(t, filepath.Join(l.src, "chmodded"), "readable, then not", 0o644, 0, 0)
	mkFile(t, filepath.Join(l.src, "acled"), "readable, then not", 0o644, 0, 0)
	for _, name := range []string{"chmodded", "acled"} {
		if got := fsop(l.a.cred, "read", l.m.Path(name)); got != "ok 18" {
			t.Fatalf("A's first read of %s: %s", name, got)
		}
	}
	mustDo(t, os.Chmod(filepath.Join(l.src, "chmodded"), 0o600))
	setfacl(t, "-m", fmt.Sprintf("u:%d:---", l.a.uid), filepath.Join(l.src, "acled"))
	for _, name := range []string{"chmodded", "acled"} {
		if got := fsop(l.a.cred, "read", l.m.Path(name)); got != "EACCES" {
			t.Errorf("A's read of %s right after its access was taken away in the backing directory: %s, want EACCES", name, got)
		}
	}
}

// TestUsersOthersFiles: what A may do to B's files through the mount is
// what it may do natively: no hard link to a file it can neither read and
// write (fs.protected_hardlinks), no chmod or chown, no truncation, and
// the umask of the caller applies to what it creates.
func TestUsersOthersFiles(t *testing.T) { inPtModes(t, testUsersOthersFiles) }

func testUsersOthersFiles(t *testing.T, pm ptMode) {
	l := newShared(t, "[mount]\n"+pm.toml+"\n")
	pm.check(t, l.m)
	if b, _ := os.ReadFile("/proc/sys/fs/protected_hardlinks"); strings.TrimSpace(string(b)) != "1" {
		t.Logf("fs.protected_hardlinks is %q here: the native side decides either way", strings.TrimSpace(string(b)))
	}
	for _, root := range []string{l.native, l.src} {
		p := func(s string) string { return filepath.Join(root, s) }
		mkDir(t, p("rw"), 0o777, 0, 0)
		mkFile(t, p("rw/b600"), bSecret, 0o600, l.b.uid, l.b.ga)
		mkFile(t, p("rw/b644"), "B's readable file", 0o644, l.b.uid, l.b.ga)
		mkFile(t, p("rw/b666"), "B's shared file", 0o666, l.b.uid, l.b.ga)
		mkFile(t, p("rw/bsuid"), "B's set-user-ID, world-writable", 0o4777, l.b.uid, l.b.ga)
	}
	steps := []fsopArgs{
		{"link", "@rw/b600", "@rw/l600"},
		{"link", "@rw/b644", "@rw/l644"},
		{"link", "@rw/b666", "@rw/l666"},
		{"chmod", "@rw/b644", "0666"},
		{"chown", "@rw/b644", "-1", strconv.FormatUint(uint64(l.shared), 10)},
		{"truncate", "@rw/b644", "0"},
		{"truncate", "@rw/b666", "3"},
		{"append", "@rw/bsuid", "a write by another user clears set-user-ID"},
		{"lstat", "@rw/bsuid"},
		{"touch", "@rw/b644"},
		{"touch", "@rw/b666"},
		{"touch-at", "@rw/b666", "1000", "5"},
		{"setxattr", "@rw/b644", "user.x", "y"},
		{"getxattr", "@rw/b600", "user.x"},
		{"with-umask", "027", "create", "@rw/umask027", "0666"},
		{"lstat", "@rw/umask027"},
		{"with-umask", "077", "mkdir", "@rw/umaskdir", "0777"},
		{"lstat", "@rw/umaskdir"},
		{"with-umask", "0", "mkfifo", "@rw/umaskfifo", "0666"},
		{"lstat", "@rw/umaskfifo"},
		{"unlink", "@rw/b600"},
	}
	compareAs(t, l, l.a, steps)
}

// unitCaps returns the capabilities of the systemd unit's
// CapabilityBoundingSet, as setpriv spells them ("sys_admin").
func unitCaps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(unitPath)
	mustDo(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			var caps []string
			for _, c := range strings.Fields(v) {
				caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
			return caps
		}
	}
	t.Fatal("no CapabilityBoundingSet in the unit")
	return nil
}

// underCaps is a setpriv command line that runs a root process with only
// caps, as systemd's CapabilityBoundingSet= does.
func underCaps(t *testing.T, caps []string) []string {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (Debian package util-linux): %v", err)
	}
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	return []string{"setpriv", "--bounding-set", set, "--inh-caps", "-all", "--"}
}

// TestUsersUnderUnitCapabilities: with only the capabilities the systemd
// unit leaves it, clamfuse still acts as each caller (what A creates is
// A's, root's 0600 file stays closed to A); without CAP_SETUID and
// CAP_SETGID it refuses allow_other rather than let every user act as
// root.
func TestUsersUnderUnitCapabilities(t *testing.T) {
	mounttest.Require(t)
	fsopBinary(t)
	u := newTestUser(t)
	base := openDir(t, "clamfuse-unitcaps")
	src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
	mustDo(t, os.Mkdir(src, 0o777))
	mustDo(t, os.Chmod(src, 0o777))
	mustDo(t, os.Mkdir(mnt, 0o755))
	mkFile(t, filepath.Join(src, "secret"), "root's", 0o600, 0, 0)
	clamd := clamdtest.New(t, clamdtest.Options{})
	args := []string{"--allow-other", "--clamd", clamd.Address(), "--timeout", "30s"}
	caps := unitCaps(t)

	m := startChecked(t, mounttest.Options{Source: src, Target: mnt, Args: args, Wrap: underCaps(t, caps)})
	m.WaitLogLines(t, 10*time.Second, "acting on the backing directory as each caller")
	if got := fsop(u.cred, "read", m.Path("secret")); got != "EACCES" {
		t.Errorf("A's read of root's 0600 file: %s, want EACCES", got)
	}
	if got := fsop(u.cred, "create", m.Path("mine"), "0644"); got != "ok" {
		t.Errorf("A's create: %s", got)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(src, "mine"), &st); err != nil || st.Uid != u.uid || st.Gid != u.ga {
		t.Errorf("A's new file: owner %d:%d %v, want %d:%d", st.Uid, st.Gid, err, u.uid, u.ga)
	}
	m.Teardown()

	var fewer []string
	for _, c := range caps {
		if c != "setuid" && c != "setgid" {
			fewer = append(fewer, c)
		}
	}
	m2 := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Args: args, Wrap: underCaps(t, fewer), NoWait: true})
	code, err := m2.ExitCode(30 * time.Second)
	if err != nil || code != 2 || !strings.Contains(m2.Log.String(), "cannot act as each caller") {
		t.Errorf("without CAP_SETUID and CAP_SETGID: exit %d %v, want 2 and the reason:\n%s", code, err, m2.Log.String())
	}
	if mounttest.IsFuseMount(mnt) {
		t.Errorf("mounted without CAP_SETUID and CAP_SETGID")
	}
}
