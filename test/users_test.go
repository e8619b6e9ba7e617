package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// testUser is an unprivileged user made for one test: primary group A,
// supplementary group B, and a group C it is not in.
type testUser struct {
	name             string
	uid, ga, gb, gc  uint32
	cred             *syscall.Credential
	createdByUseradd bool
}

// newTestUser creates a real user and three groups with useradd and
// groupadd (removed at cleanup). Without those tools it falls back to
// numeric ids no account uses, which the kernel accepts all the same.
// extra are more supplementary groups for the user (see newTestGroup),
// so that two users can share one.
func newTestUser(t *testing.T, extra ...uint32) testUser {
	t.Helper()
	suffix := fmt.Sprintf("%06d", rand.IntN(1000000))
	u := testUser{name: "cfu" + suffix}
	groups := []string{"cfga" + suffix, "cfgb" + suffix, "cfgc" + suffix}
	if _, err := exec.LookPath("useradd"); err == nil {
		for _, g := range groups {
			if out, err := exec.Command("groupadd", g).CombinedOutput(); err != nil {
				t.Fatalf("groupadd %s: %v\n%s", g, err, out)
			}
			t.Cleanup(func() { exec.Command("groupdel", g).Run() })
		}
		supp := []string{groups[1]}
		for _, g := range extra {
			supp = append(supp, strconv.FormatUint(uint64(g), 10))
		}
		if out, err := exec.Command("useradd", "-M", "-N", "-d", "/nonexistent", "-s", "/usr/sbin/nologin",
			"-g", groups[0], "-G", strings.Join(supp, ","), u.name).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v\n%s", err, out)
		}
		// userdel runs before the groupdels (cleanups run last first).
		t.Cleanup(func() { exec.Command("userdel", u.name).Run() })
		u.createdByUseradd = true
		pw, err := user.Lookup(u.name)
		if err != nil {
			t.Fatal(err)
		}
		u.uid = atou(t, pw.Uid)
		ids := make([]uint32, 3)
		for i, g := range groups {
			gr, err := user.LookupGroup(g)
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = atou(t, gr.Gid)
		}
		u.ga, u.gb, u.gc = ids[0], ids[1], ids[2]
	} else {
		t.Logf("no useradd: using numeric ids without accounts")
		base := uint32(60000 + rand.IntN(4000))
		u.uid, u.ga, u.gb, u.gc = base, base, base+1, base+2
	}
	u.cred = &syscall.Credential{Uid: u.uid, Gid: u.ga, Groups: append([]uint32{u.ga, u.gb}, extra...)}
	t.Logf("test user %s uid=%d groups A=%d B=%d %v, not in C=%d", u.name, u.uid, u.ga, u.gb, extra, u.gc)
	return u
}

// newTestGroup creates a group (removed at cleanup) for newTestUser's
// extra groups; without groupadd, a numeric id no group uses.
func newTestGroup(t *testing.T) uint32 {
	t.Helper()
	name := fmt.Sprintf("cfgs%06d", rand.IntN(1000000))
	if _, err := exec.LookPath("groupadd"); err != nil {
		return uint32(64000 + rand.IntN(1000))
	}
	if out, err := exec.Command("groupadd", name).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("groupdel", name).Run() })
	gr, err := user.LookupGroup(name)
	if err != nil {
		t.Fatal(err)
	}
	return atou(t, gr.Gid)
}

func atou(t *testing.T, s string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

// openDir makes a directory under /tmp that every user may traverse
// (t.TempDir's parents are 0700), removed at cleanup.
func openDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	mustDo(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestUsers runs the same operations as an unprivileged user on a native
// directory and on a clamfuse mount (allow_other, clamfuse as root,
// default_permissions), set up alike, and requires the same outcome:
// permissions are enforced as the backing modes say, and what the user
// creates is the user's, with the group a set-group-ID directory gives,
// never root's.
// It runs in both passthrough modes (ptMode).
func TestUsers(t *testing.T) { inPtModes(t, testUsers) }

func testUsers(t *testing.T, pm ptMode) {
	mounttest.Require(t)
	fsopBinary(t)
	u := newTestUser(t)
	base := openDir(t, "clamfuse-users")
	native, src, mnt := filepath.Join(base, "native"), filepath.Join(base, "src"), filepath.Join(base, "mnt")
	for _, d := range []string{native, src, mnt} {
		mustDo(t, os.Mkdir(d, 0o755))
	}
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: "[mount]\n" + pm.toml + "\n",
		Args: []string{"--allow-other", "--clamd", clamd.Address(), "--timeout", "30s"}})
	pm.check(t, m)

	// The same tree on both sides, made by root: on the native side
	// directly, on the other through the mount.
	for _, root := range []string{native, mnt} {
		usersSetup(t, root, u)
	}

	steps := usersSteps(u)
	var diffs []string
	results := map[string]string{}
	for _, s := range steps {
		want := fsop(u.cred, s.expand(native)...)
		var got string
		m.Within(t, time.Minute, strings.Join(s, " "), func() { got = fsop(u.cred, s.expand(mnt)...) })
		got = strings.ReplaceAll(got, mnt, "ROOT")
		want = strings.ReplaceAll(want, native, "ROOT")
		results[strings.Join(s, " ")] = got
		if got != want {
			diffs = append(diffs, fmt.Sprintf("%s\n  native: %s\n  mount:  %s", strings.Join(s, " "), want, got))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%d of %d operations as uid %d differ from native:\n%s", len(diffs), len(steps), u.uid, strings.Join(diffs, "\n"))
	}

	// Beyond agreeing with native: the promises in so many words.
	if os.Getenv("CLAMFUSE_USERS_SHOW") != "" {
		for _, st := range steps {
			t.Logf("%s => %s", strings.Join(st, " "), results[strings.Join(st, " ")])
		}
	}
	if r := results["read @secret"]; r != "EACCES" {
		t.Errorf("user read of a 0600 root file through the mount: %s, want EACCES", r)
	}
	for _, name := range []string{"rw/f", "rw/d", "rw/l", "rw/p", "rw/s", "sg/f", "sg/d", "sg/l", "sg/p"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(src, name), &st); err != nil {
			t.Errorf("backing %s: %v", name, err)
			continue
		}
		wantGid := u.ga
		if strings.HasPrefix(name, "sg/") {
			wantGid = u.gc
		}
		if st.Uid != u.uid || st.Gid != wantGid {
			t.Errorf("backing %s made by uid %d through the mount is owned by %d:%d, want %d:%d", name, u.uid, st.Uid, st.Gid, u.uid, wantGid)
		}
	}
}

// fsopArgs is an fsop command line whose arguments starting with "@"
// name paths beneath the tree root.
type fsopArgs []string

func (a fsopArgs) expand(root string) []string {
	out := make([]string, len(a))
	for i, s := range a {
		if strings.HasPrefix(s, "@") {
			s = filepath.Join(root, s[1:])
		}
		out[i] = s
	}
	return out
}

func usersSetup(t *testing.T, root string, u testUser) {
	t.Helper()
	p := func(s string) string { return filepath.Join(root, s) }
	file := func(name, data string, mode uint32, uid, gid uint32) {
		mustDo(t, os.WriteFile(p(name), []byte(data), 0o600))
		mustDo(t, os.Lchown(p(name), int(uid), int(gid)))
		mustDo(t, unix.Chmod(p(name), mode))
	}
	dir := func(name string, mode uint32, uid, gid uint32) {
		mustDo(t, os.Mkdir(p(name), 0o700))
		mustDo(t, os.Lchown(p(name), int(uid), int(gid)))
		mustDo(t, unix.Chmod(p(name), mode))
	}
	file("secret", "secret", 0o600, 0, 0)
	file("public", "public", 0o644, 0, 0)
	file("grp", "group-readable", 0o640, 0, u.gb)
	file("grpc", "group C only", 0o640, 0, u.gc)
	file("mine", "mine", 0o600, u.uid, u.ga)
	file("wonly", "", 0o622, 0, 0)
	file("shared", "shared", 0o666, 0, 0)
	file("noperm", "none", 0o000, u.uid, u.ga)
	dir("ro", 0o755, 0, 0)
	dir("rw", 0o777, 0, 0)
	dir("sg", 0o2777, 0, u.gc)
	dir("st", 0o1777, 0, 0)
	file("st/theirs", "theirs", 0o666, 12345, 12345)
	file("st/mine", "mine", 0o644, u.uid, u.ga)
	dir("st/theirdir", 0o777, 12345, 12345)
	dir("closed", 0o700, 0, 0)
	file("closed/f", "behind a closed dir", 0o644, 0, 0)
	dir("mydir", 0o755, u.uid, u.ga)
	file("mydir/root-file", "root's in my dir", 0o644, 0, 0)
}

func usersSteps(u testUser) []fsopArgs {
	id := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
	return []fsopArgs{
		// Reading is decided by the backing modes.
		{"read", "@secret"},
		{"read", "@public"},
		{"read", "@grp"},
		{"read", "@grpc"},
		{"read", "@mine"},
		{"read", "@noperm"},
		{"read", "@closed/f"},
		{"lstat", "@closed/f"},
		{"write", "@wonly", "w"},
		{"read", "@wonly"},
		{"write", "@public", "x"},
		{"append", "@shared", "+user"},
		{"cat", "@shared"},
		{"truncate", "@public", "0"},
		{"truncate", "@shared", "3"},
		// Creation: owner is the caller.
		{"create", "@ro/x", "0644"},
		{"mkdir", "@ro/d", "0755"},
		{"create", "@rw/f", "0644"},
		{"lstat", "@rw/f"},
		{"create", "@rw/f", "0644"},
		{"mkdir", "@rw/d", "0750"},
		{"lstat", "@rw/d"},
		{"symlink", "target", "@rw/l"},
		{"lstat", "@rw/l"},
		{"mkfifo", "@rw/p", "0640"},
		{"lstat", "@rw/p"},
		{"mksock", "@rw/s", "0600"},
		{"lstat", "@rw/s"},
		{"create", "@rw/suid", "04755"},
		{"lstat", "@rw/suid"},
		{"create", "@rw/sgid", "02755"},
		{"lstat", "@rw/sgid"},
		{"write", "@rw/suid", "an unprivileged write clears set-user-ID"},
		{"lstat", "@rw/suid"},
		{"link", "@rw/f", "@rw/f2"},
		{"lstat", "@rw/f2"},
		{"link", "@secret", "@rw/hardlink-to-root-file"},
		{"link", "@public", "@rw/hardlink-to-public"},
		{"rename", "@rw/f2", "@rw/f3"},
		{"rename", "@rw/f3", "@ro/f3"},
		{"rename", "@mydir/root-file", "@mydir/renamed"},
		{"unlink", "@mydir/renamed"},
		// A set-group-ID directory gives its group (and the bit, to
		// directories).
		{"create", "@sg/f", "0644"},
		{"lstat", "@sg/f"},
		{"mkdir", "@sg/d", "0755"},
		{"lstat", "@sg/d"},
		{"create", "@sg/x", "02755"},
		{"lstat", "@sg/x"},
		{"symlink", "t", "@sg/l"},
		{"lstat", "@sg/l"},
		{"mkfifo", "@sg/p", "0644"},
		{"lstat", "@sg/p"},
		{"create", "@sg/d/nested", "0644"},
		{"lstat", "@sg/d/nested"},
		// The sticky directory protects other users' entries.
		{"unlink", "@st/theirs"},
		{"rename", "@st/theirs", "@st/moved"},
		{"rename", "@st/theirs", "@rw/moved"},
		{"rename", "@rw/f", "@st/theirs"},
		{"rmdir", "@st/theirdir"},
		{"rename", "@st/theirdir", "@st/moveddir"},
		{"write", "@st/theirs", "writable though"},
		{"rename", "@st/mine", "@st/mine2"},
		{"unlink", "@st/mine2"},
		{"create", "@st/new", "0644"},
		{"unlink", "@st/new"},
		{"lstat", "@st/theirs"},
		// Metadata changes need ownership.
		{"chmod", "@public", "0777"},
		{"chmod", "@mine", "0640"},
		{"lstat", "@mine"},
		{"chmod", "@mine", "02640"},
		{"lstat", "@mine"},
		{"chown", "@mine", "-1", id(u.gb)},
		{"lstat", "@mine"},
		{"chown", "@mine", "-1", id(u.gc)},
		{"chown", "@mine", "0", "-1"},
		{"chown", "@public", "-1", id(u.ga)},
		{"touch", "@shared"},
		{"touch", "@public"},
		{"touch-at", "@shared", "1000", "5"},
		{"touch-at", "@mine", "1000", "5"},
		{"setxattr", "@mine", "user.note", "mine"},
		{"getxattr", "@mine", "user.note"},
		{"setxattr", "@public", "user.note", "not mine"},
		{"setxattr", "@mine", "trusted.x", "needs CAP_SYS_ADMIN"},
		{"mkdir", "@rw/d2", "0755"},
		{"symlink", "x", "@rw/l2"},
		{"rmdir", "@rw/d2"},
		{"unlink", "@rw/l2"},
		{"unlink", "@ro/../public"},
	}
}
