package caller

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clamfuse/clamfuse/test/testenv"

	"golang.org/x/sys/unix"
)

// Ids no account uses; the kernel takes them all the same.
const (
	userA  = 61001
	groupA = 61001
	groupX = 61077 // a supplementary group
)

func requireRoot(t *testing.T) {
	t.Helper()
	if ok, why := Switching(); !ok {
		testenv.Skip(t, "cannot switch credentials here: %s", why)
	}
}

// openDir is a directory every user may use, removed at cleanup.
func openDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "caller-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

func dirFD(t *testing.T, d string) int {
	t.Helper()
	fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func writeFile(t *testing.T, p string, mode uint32, uid, gid int) {
	t.Helper()
	if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func pathFD(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestCredentialsApplied: each call is decided by the backing filesystem
// for the caller (mode, group membership, ownership, the capabilities an
// fsuid other than 0 drops), and what it creates belongs to the caller.
func TestCredentialsApplied(t *testing.T) {
	requireRoot(t)
	d := openDir(t)
	dfd := dirFD(t, d)
	writeFile(t, filepath.Join(d, "root600"), 0o600, 0, 0)
	writeFile(t, filepath.Join(d, "grp640"), 0o640, 0, groupX)
	writeFile(t, filepath.Join(d, "mine"), 0o600, userA, groupA)
	a := Cred{Uid: userA, Gid: groupA}
	ax := Cred{Uid: userA, Gid: groupA, Groups: []uint32{groupX}}
	root := Cred{}

	open := func(c Cred, name string, flags int) error {
		fd, err := Openat(c, dfd, name, flags|unix.O_NOFOLLOW, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	tests := []struct {
		what string
		err  error
		want error
	}{
		{"A reads root's 0600", open(a, "root600", unix.O_RDONLY), syscall.EACCES},
		{"root reads root's 0600", open(root, "root600", unix.O_RDONLY), nil},
		{"A reads a 0640 of group X, not in X", open(a, "grp640", unix.O_RDONLY), syscall.EACCES},
		{"A reads a 0640 of group X, in X", open(ax, "grp640", unix.O_RDONLY), nil},
		{"A writes a 0640 of group X, in X", open(ax, "grp640", unix.O_WRONLY), syscall.EACCES},
		{"A reads its own 0600", open(a, "mine", unix.O_RDONLY), nil},
		{"A truncates root's 0600 by O_TRUNC", open(a, "root600", unix.O_WRONLY|unix.O_TRUNC), syscall.EACCES},
		{"A chmods root's file", Chmod(a, pathFD(t, filepath.Join(d, "root600")), false, 0o666), syscall.EPERM},
		{"A chowns its file to root", Chown(a, pathFD(t, filepath.Join(d, "mine")), 0, -1), syscall.EPERM},
		{"A chgrps its file to X, not in X", Chown(a, pathFD(t, filepath.Join(d, "mine")), -1, groupX), syscall.EPERM},
		{"A links root's 0600 (protected_hardlinks)", Link(a, pathFD(t, filepath.Join(d, "root600")), dfd, "hl"), syscall.EPERM},
		{"A makes a device node", Mknodat(a, dfd, "null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))), syscall.EPERM},
		{"A sets explicit times on root's file", Utimens(a, pathFD(t, filepath.Join(d, "root600")), []unix.Timespec{{Sec: 1}, {Sec: 1}}), syscall.EPERM},
		{"A truncates root's file by descriptor", Truncate(a, pathFD(t, filepath.Join(d, "root600")), 0, false), syscall.EACCES},
		{"A truncates root's file by descriptor, waiting", Truncate(a, pathFD(t, filepath.Join(d, "root600")), 0, true), syscall.EACCES},
		{"A asks for write access to root's file", Access(a, pathFD(t, filepath.Join(d, "root600")), unix.W_OK), syscall.EACCES},
		{"A reopens root's file", func() error {
			fd, err := Reopen(a, pathFD(t, filepath.Join(d, "root600")), unix.O_RDONLY)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}(), syscall.EACCES},
		{"A chgrps its file to X, in X", Chown(ax, pathFD(t, filepath.Join(d, "mine")), -1, groupX), nil},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) && !(tt.want == nil && tt.err == nil) {
			t.Errorf("%s: %v, want %v", tt.what, tt.err, tt.want)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(d, "root600"), &st); err != nil || st.Size != 4 || st.Mode&0o7777 != 0o600 {
		t.Errorf("root600 after A's attempts: size %d mode %o %v", st.Size, st.Mode&0o7777, err)
	}

	// Creation: owned by the caller, with the mode asked (clamfuse's
	// umask aside: the test process keeps its own).
	old := unix.Umask(0)
	defer unix.Umask(old)
	fd, err := Openat(ax, dfd, "new", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	for _, mk := range []func() error{
		func() error { return Mkdirat(ax, dfd, "newdir", 0o750) },
		func() error { return Symlinkat(ax, "target", dfd, "newlink") },
		func() error { return Mknodat(ax, dfd, "newfifo", unix.S_IFIFO|0o600, 0) },
	} {
		if err := mk(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"new", "newdir", "newlink", "newfifo"} {
		if err := unix.Lstat(filepath.Join(d, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != userA || st.Gid != groupA {
			t.Errorf("%s made as %d:%d is owned by %d:%d", name, userA, groupA, st.Uid, st.Gid)
		}
	}
	if err := Renameat(a, dfd, "new", dfd, "renamed", 0); err != nil {
		t.Errorf("A renames its file in a 0777 directory: %v", err)
	}
	if err := Unlinkat(a, dfd, "renamed", 0); err != nil {
		t.Errorf("A unlinks its file: %v", err)
	}
}

// threadStatus returns the filesystem ids and groups of the calling
// thread, from /proc/thread-self/status.
func threadStatus(t testing.TB) (fsuid, fsgid string, groups string) {
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch string(f[0]) {
		case "Uid:":
			fsuid = string(f[4])
		case "Gid:":
			fsgid = string(f[4])
		case "Groups:":
			groups = string(bytes.Join(f[1:], []byte(" ")))
		}
	}
	return
}

// TestRestoredPerThread: while calls run as users on many goroutines at
// once, every other goroutine keeps running as root, and inside a call the
// thread is the caller. Afterwards, no thread of the process is left with a
// user's credentials.
func TestRestoredPerThread(t *testing.T) {
	requireRoot(t)
	d := openDir(t)
	dfd := dirFD(t, d)
	writeFile(t, filepath.Join(d, "root600"), 0o600, 0, 0)
	_, _, rootGroups := threadStatus(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	stop := make(chan struct{})
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := Cred{Uid: uint32(userA + i), Gid: uint32(groupA + i), Groups: []uint32{groupX + uint32(i)}}
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				err := c.do(func() error {
					u, g, gr := threadStatus(t)
					if u != fmt.Sprint(c.Uid) || g != fmt.Sprint(c.Gid) || gr != fmt.Sprint(c.Groups[0]) {
						fail("inside a call for %d:%d %v the thread is %s:%s [%s]", c.Uid, c.Gid, c.Groups, u, g, gr)
					}
					return nil
				})
				if err != nil {
					fail("call: %v", err)
				}
				if fd, err := Openat(c, dfd, "root600", unix.O_RDONLY, 0); err == nil {
					unix.Close(fd)
					fail("uid %d opened root's 0600 file", c.Uid)
				}
				runtime.Gosched()
			}
		}()
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				fd, err := unix.Openat(dfd, "root600", unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					fail("root's own open failed while users' calls ran: %v", err)
					continue
				}
				unix.Close(fd)
				runtime.Gosched()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	// Every thread of the process is root again, but AsNobody's, should
	// a test before have started it.
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == strconv.Itoa(nobodyThread.tid) {
			continue
		}
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/status")
		if err != nil {
			continue // gone
		}
		groups, ok := parseStatus(b, 0, 0)
		if !ok {
			t.Errorf("thread %s is not root's: %s", e.Name(), b)
			continue
		}
		if got := fmt.Sprint(groups); got != fmt.Sprint(self.groups) {
			t.Errorf("thread %s has groups %s, want %v (%s)", e.Name(), got, self.groups, rootGroups)
		}
	}
}

// TestRestoredAfterPanic: a panic inside a call (recovered, as a server
// might) leaves the thread as clamfuse.
func TestRestoredAfterPanic(t *testing.T) {
	requireRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := Cred{Uid: userA, Gid: groupA, Groups: []uint32{groupX}}
	func() {
		defer func() { recover() }()
		c.do(func() error { panic("inside") })
	}()
	if u, g, _ := threadStatus(t); u != "0" || g != "0" {
		t.Errorf("after a panic inside a call the thread is %s:%s", u, g)
	}
}

func TestParseStatus(t *testing.T) {
	const status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t101\nGroups:\t27 4 27 100 \nNgid:\t0\n"
	tests := []struct {
		name     string
		status   string
		uid, gid uint32
		want     []uint32
		ok       bool
	}{
		{"fs ids match", status, 1001, 101, []uint32{4, 27, 100}, true},
		{"real ids are not fs ids", status, 1000, 100, nil, false},
		{"other gid", status, 1001, 100, nil, false},
		{"no groups", "Uid:\t5\t5\t5\t5\nGid:\t6\t6\t6\t6\nGroups:\t\n", 5, 6, []uint32{}, true},
		{"no Groups line", "Uid:\t5\t5\t5\t5\nGid:\t6\t6\t6\t6\n", 5, 6, nil, false},
		{"garbage group", "Uid:\t5\t5\t5\t5\nGid:\t6\t6\t6\t6\nGroups:\t1 x\n", 5, 6, nil, false},
		{"short Uid line", "Uid:\t5\t5\nGid:\t6\t6\t6\t6\nGroups:\t1\n", 5, 6, nil, false},
		{"empty", "", 5, 6, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseStatus([]byte(tt.status), tt.uid, tt.gid)
			if ok != tt.ok || !slices.Equal(got, tt.want) {
				t.Errorf("parseStatus = %v %v, want %v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestCache: groups come from the caller's /proc status, only while its
// ids are the request's; an entry lives for the cache's ttl and is keyed
// by (pid, uid, gid).
func TestCache(t *testing.T) {
	requireRoot(t)
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: userA, Gid: groupA, Groups: []uint32{groupX, groupX + 1}}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := uint32(cmd.Process.Pid)
	now := time.Unix(1000, 0)
	c := NewCache(time.Second)
	c.now = func() time.Time { return now }

	want := []uint32{groupX, groupX + 1}
	// The process may still be root for a moment after fork, before exec:
	// wait until its status shows the new ids.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if g := readGroups(pid, userA, groupA); slices.Equal(g, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep's status never showed %d:%d %v", userA, groupA, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.Cred(pid, userA, groupA); got.Uid != userA || got.Gid != groupA || !slices.Equal(got.Groups, want) {
		t.Errorf("Cred = %+v, want groups %v", got, want)
	}
	if got := c.Cred(pid, userA, groupA+5); len(got.Groups) != 0 {
		t.Errorf("Cred with a gid the process does not have = %v, want no groups", got.Groups)
	}
	if got := c.Cred(0, userA, groupA); len(got.Groups) != 0 {
		t.Errorf("Cred for pid 0 = %v, want no groups", got.Groups)
	}
	if got := c.Cred(pid, 0, 0); len(got.Groups) != 0 {
		t.Errorf("Cred for root = %v, want no groups", got.Groups)
	}
	// Gone: the entry lives until its ttl, then goes.
	cmd.Process.Kill()
	cmd.Wait()
	now = now.Add(500 * time.Millisecond)
	if got := c.Cred(pid, userA, groupA); !slices.Equal(got.Groups, want) {
		t.Errorf("Cred within the ttl = %v, want the cached %v", got.Groups, want)
	}
	now = now.Add(600 * time.Millisecond)
	if got := c.Cred(pid, userA, groupA); len(got.Groups) != 0 {
		t.Errorf("Cred after the ttl, process gone = %v, want none", got.Groups)
	}
}

func TestCacheBounded(t *testing.T) {
	requireRoot(t)
	c := NewCache(time.Hour)
	for i := range maxEntries + 10 {
		c.Cred(uint32(4000000+i), userA, groupA) // no such pids
	}
	if n := len(c.m); n > maxEntries {
		t.Errorf("%d entries, want at most %d", n, maxEntries)
	}
}

// BenchmarkSwitch is the cost of a call (an fstatat) made directly, for a
// root caller, and for a user with and without supplementary groups.
func BenchmarkSwitch(b *testing.B) {
	if ok, why := Switching(); !ok {
		b.Skipf("SKIPPING: cannot switch credentials here: %s", why)
	}
	dfd, err := unix.Open(os.TempDir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(dfd)
	for _, bc := range []struct {
		name string
		c    Cred
	}{
		{"root", Cred{}},
		{"user", Cred{Uid: userA, Gid: groupA}},
		{"user+groups", Cred{Uid: userA, Gid: groupA, Groups: []uint32{groupX, groupX + 1, groupX + 2}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var st unix.Stat_t
			for b.Loop() {
				Fstatat(bc.c, dfd, ".", &st)
			}
		})
	}
	b.Run("cache", func(b *testing.B) {
		c := NewCache(time.Hour)
		pid := uint32(os.Getpid())
		for b.Loop() {
			c.Cred(pid, userA, groupA)
		}
	})
}
