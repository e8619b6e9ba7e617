package test

// Changes made directly in the backing directory, while the kernel
// trusts names and attributes for an hour: the watcher (fs/watch.go)
// must make them show through the mount at once, and the same changes
// under a mount without invalidation must stay unseen, which shows that
// each case tests something.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
	"github.com/clamfuse/clamfuse/test/testenv"
)

// watchBound is how soon a change made directly in the backing directory
// must show through a watched mount. The README promises milliseconds;
// this leaves room for a loaded test machine.
const watchBound = 2 * time.Second

// watchedConfig mounts with the defaults (invalidation "auto", names and
// attributes trusted for an hour); unwatchedConfig without invalidation
// and with the same hour, the stale view the watcher prevents.
func watchedConfig(clamd *clamdtest.Clamd) string {
	return fmt.Sprintf("[clamd]\naddress = %q\ntimeout = \"30s\"\n[mount]\nwatched_attr_timeout = \"1h\"\n", clamd.Address())
}

func unwatchedConfig(clamd *clamdtest.Clamd) string {
	return fmt.Sprintf("[clamd]\naddress = %q\ntimeout = \"30s\"\n[mount]\ninvalidation = \"off\"\nattr_timeout = \"1h\"\n", clamd.Address())
}

// watchPair mounts two fresh backing directories: one watched, one not.
func watchPair(t *testing.T, args ...string) (clamd *clamdtest.Clamd, watched, unwatched *mounttest.Mount) {
	t.Helper()
	mounttest.Require(t)
	clamd = clamdtest.New(t, clamdtest.Options{})
	base := openDir(t, "cfw")
	mk := func(name, config string) *mounttest.Mount {
		src, mnt := filepath.Join(base, name+"-src"), filepath.Join(base, name+"-mnt")
		mustDo(t, os.Mkdir(src, 0o755))
		mustDo(t, os.Mkdir(mnt, 0o755))
		return mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: config, Args: args})
	}
	watched = mk("watched", watchedConfig(clamd))
	unwatched = mk("unwatched", unwatchedConfig(clamd))
	watched.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	unwatched.WaitLogLines(t, 10*time.Second, "msg=mounted", "invalidation=false")
	return clamd, watched, unwatched
}

// view describes paths beneath root as stat, and with full as ls and cat
// too, see them: type, mode, owner, size, link count, inode and times of
// each (or the error), and with full the sorted names of a directory and
// the contents of a file. A read or a listing through a FUSE mount makes
// the kernel ask for the attributes at the next stat (for the access
// time), so only a view without full shows what the kernel caches.
func view(root string, paths []string, full bool) string {
	var b strings.Builder
	for _, p := range paths {
		fp := filepath.Join(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(fp, &st); err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p, err)
			continue
		}
		fmt.Fprintf(&b, "%s: %s %04o %d:%d size=%d nlink=%d ino=%d mtime=%d.%09d ctime=%d.%09d\n", p,
			mounttest.TypeName(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Nlink, st.Ino,
			st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		if !full {
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			ents, err := os.ReadDir(fp)
			names := make([]string, 0, len(ents))
			for _, e := range ents {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			fmt.Fprintf(&b, "  names %v %v\n", names, err)
		case unix.S_IFREG:
			data, err := os.ReadFile(fp)
			fmt.Fprintf(&b, "  data %q %v\n", data, err)
		}
	}
	return b.String()
}

// waitView polls until view of paths through m equals the backing
// directory's, for up to d, and returns the last two views.
func waitView(t *testing.T, m *mounttest.Mount, sub string, paths []string, full bool, d time.Duration) (got, want string, ok bool) {
	t.Helper()
	m.Within(t, d+30*time.Second, "viewing "+sub, func() {
		deadline := time.Now().Add(d)
		for {
			want = view(m.Backing(sub), paths, full)
			got = view(m.Path(sub), paths, full)
			if got == want {
				ok = true
				return
			}
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return got, want, ok
}

// pin holds an O_PATH descriptor of each of paths beneath root that
// exists, until the test ends, so that the kernel keeps their entries
// and inodes, and what it caches of them: otherwise anything on the
// machine dropping caches (a benchmark's drop_caches) would make a mount
// without invalidation look fresh.
func pin(t *testing.T, root string, paths []string) {
	t.Helper()
	for _, p := range paths {
		fd, err := unix.Open(filepath.Join(root, p), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			t.Cleanup(func() { unix.Close(fd) })
		}
	}
}

// behindCase is a change made directly in the backing directory: setup
// makes the state the mount first sees, change changes it; paths are
// what the view compares (relative to the case's directory).
type behindCase struct {
	name   string
	paths  []string
	setup  func(t *testing.T, dir string)
	change func(t *testing.T, dir string)
}

func behindCases() []behindCase {
	file := func(t *testing.T, dir string) { putFile(t, filepath.Join(dir, "f"), []byte("first contents\n")) }
	return []behindCase{
		{"created", []string{".", "new"}, file,
			func(t *testing.T, dir string) { putFile(t, filepath.Join(dir, "new"), []byte("new file\n")) }},
		{"removed", []string{".", "f"}, file,
			func(t *testing.T, dir string) { mustDo(t, os.Remove(filepath.Join(dir, "f"))) }},
		{"renamed", []string{".", "f", "g"}, file,
			func(t *testing.T, dir string) { mustDo(t, os.Rename(filepath.Join(dir, "f"), filepath.Join(dir, "g"))) }},
		{"chmod", []string{"f"}, file,
			func(t *testing.T, dir string) { mustDo(t, os.Chmod(filepath.Join(dir, "f"), 0o600)) }},
		{"chown", []string{"f"}, file,
			func(t *testing.T, dir string) { mustDo(t, os.Lchown(filepath.Join(dir, "f"), 4321, 4322)) }},
		{"truncated", []string{"f"}, file,
			func(t *testing.T, dir string) { mustDo(t, os.Truncate(filepath.Join(dir, "f"), 5)) }},
		{"appended", []string{"f"}, file,
			func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, "f"), os.O_WRONLY|os.O_APPEND, 0)
				mustDo(t, err)
				_, err = f.WriteString("and more\n")
				mustDo(t, err)
				mustDo(t, f.Close())
			}},
		{"replaced", []string{".", "f"}, file,
			func(t *testing.T, dir string) {
				putFile(t, filepath.Join(dir, "f.tmp"), []byte("replacement\n"))
				mustDo(t, os.Rename(filepath.Join(dir, "f.tmp"), filepath.Join(dir, "f")))
			}},
		{"touched", []string{"f"}, file,
			func(t *testing.T, dir string) {
				ts := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
				mustDo(t, os.Chtimes(filepath.Join(dir, "f"), ts, ts))
			}},
		{"xattr", []string{"f"}, file,
			func(t *testing.T, dir string) {
				mustDo(t, unix.Lsetxattr(filepath.Join(dir, "f"), "user.watched", []byte("1"), 0))
			}},
		{"linked", []string{".", "f", "h"}, file,
			func(t *testing.T, dir string) { mustDo(t, os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "h"))) }},
		{"link removed", []string{".", "f", "h"},
			func(t *testing.T, dir string) {
				file(t, dir)
				mustDo(t, os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "h")))
			},
			func(t *testing.T, dir string) { mustDo(t, os.Remove(filepath.Join(dir, "h"))) }},
		{"mkdir", []string{".", "sub"}, file,
			func(t *testing.T, dir string) { mustDo(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755)) }},
		{"dir renamed", []string{".", "sub", "sub/x", "sub2", "sub2/x"},
			func(t *testing.T, dir string) {
				mustDo(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
				putFile(t, filepath.Join(dir, "sub", "x"), []byte("x\n"))
			},
			func(t *testing.T, dir string) {
				mustDo(t, os.Rename(filepath.Join(dir, "sub"), filepath.Join(dir, "sub2")))
			}},
		{"dir chmod", []string{".", "sub", "sub/x"},
			func(t *testing.T, dir string) {
				mustDo(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
				putFile(t, filepath.Join(dir, "sub", "x"), []byte("x\n"))
			},
			func(t *testing.T, dir string) { mustDo(t, os.Chmod(filepath.Join(dir, "sub"), 0o711)) }},
		{"dir renamed then changed", []string{"sub", "sub/x", "sub2", "sub2/x"},
			func(t *testing.T, dir string) {
				mustDo(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
				putFile(t, filepath.Join(dir, "sub", "x"), []byte("x\n"))
			},
			func(t *testing.T, dir string) {
				mustDo(t, os.Rename(filepath.Join(dir, "sub"), filepath.Join(dir, "sub2")))
				mustDo(t, os.Chmod(filepath.Join(dir, "sub2", "x"), 0o640))
			}},
	}
}

// TestWatchChangesBehind: with names and attributes trusted for an hour,
// each change made directly in the backing directory shows through the
// watched mount (stat, ls, cat) within watchBound, and does not through
// a mount without invalidation.
func TestWatchChangesBehind(t *testing.T) {
	_, w, u := watchPair(t)
	for _, c := range behindCases() {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			dir := strings.ReplaceAll(c.name, " ", "_")
			var before string
			for _, m := range []*mounttest.Mount{w, u} {
				mustDo(t, os.Mkdir(m.Backing(dir), 0o755))
				c.setup(t, m.Backing(dir))
				// What the kernel caches: a first look through the
				// mount, ls and cat included, then a stat.
				for _, full := range []bool{true, false} {
					if got, want, ok := waitView(t, m, dir, c.paths, full, watchBound); !ok {
						t.Fatalf("before the change, the mount shows:\n%s\nthe backing directory:\n%s", got, want)
					}
				}
				before = view(m.Backing(dir), c.paths, false)
				pin(t, m.Path(dir), c.paths)
			}
			for _, m := range []*mounttest.Mount{w, u} {
				c.change(t, m.Backing(dir))
			}
			if after := view(u.Backing(dir), c.paths, false); after == before {
				t.Fatalf("the change does not show in stat:\n%s", after)
			}
			start := time.Now()
			got, want, ok := waitView(t, w, dir, c.paths, false, watchBound)
			if !ok {
				t.Fatalf("the watched mount still shows, %v after the change:\n%s\nthe backing directory:\n%s", watchBound, got, want)
			}
			t.Logf("shown through the watched mount after %v", time.Since(start).Round(time.Millisecond))
			if got, want, ok := waitView(t, u, dir, c.paths, false, 0); ok {
				t.Errorf("the mount without invalidation shows the change too: the case proves nothing:\n%s\n(backing:\n%s)", got, want)
			}
			// ls and cat agree too.
			if got, want, ok := waitView(t, w, dir, c.paths, true, 0); !ok {
				t.Errorf("the watched mount lists or reads\n%s\nthe backing directory\n%s", got, want)
			}
		})
	}
}

// TestWatchPermissionsFollow: a chmod made directly in the backing
// directory applies at once to a user working through the mount: the
// kernel's own permission check (default_permissions) uses the new mode,
// where a mount without invalidation goes on using the cached one.
func TestWatchPermissionsFollow(t *testing.T) {
	fsopBinary(t)
	user := newTestUser(t)
	_, w, u := watchPair(t, "--allow-other")
	for _, m := range []*mounttest.Mount{w, u} {
		traversableByAll(t, m.Source)
		mustDo(t, os.Mkdir(m.Backing("d"), 0o755))
		putFile(t, m.Backing("d/f"), []byte("readable for now\n"))
		if got := fsop(user.cred, "read", m.Path("d/f")); got != "ok 17" {
			t.Fatalf("%s: the user's first read: %s", m.Target, got)
		}
		if got := fsop(user.cred, "lstat", m.Path("d/f")); !strings.Contains(got, "mode=0644") {
			t.Fatalf("%s: the user's first lstat: %s", m.Target, got)
		}
		pin(t, m.Target, []string{"d", "d/f"})
		mustDo(t, os.Chmod(m.Backing("d/f"), 0o600))
	}
	poll := func(what string, op []string, want func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(watchBound)
		var got string
		for {
			if got = fsop(user.cred, op...); want(got) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v as %s still gives %q %v after the change", what, op, user.name, got, watchBound)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	poll("file chmod 600", []string{"lstat", w.Path("d/f")}, func(s string) bool { return strings.Contains(s, "mode=0600") })
	poll("file chmod 600", []string{"read", w.Path("d/f")}, func(s string) bool { return s == "EACCES" })
	if got := fsop(user.cred, "lstat", u.Path("d/f")); !strings.Contains(got, "mode=0644") {
		t.Errorf("without invalidation, the user's lstat shows the new mode already (%s): the case proves nothing", got)
	}

	for _, m := range []*mounttest.Mount{w, u} {
		mustDo(t, os.Chmod(m.Backing("d"), 0o700))
	}
	poll("directory chmod 700", []string{"lstat", w.Path("d/f")}, func(s string) bool { return s == "EACCES" })
	ls := exec.Command("ls", "-l", w.Path("d"))
	ls.SysProcAttr = &syscall.SysProcAttr{Credential: user.cred}
	if out, err := ls.CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("ls -l of a directory now 0700, as %s: %v\n%s", user.name, err, out)
	}
	if got := fsop(user.cred, "lstat", u.Path("d/f")); got == "EACCES" {
		t.Errorf("without invalidation, the user is refused the directory already: the case proves nothing")
	}
}

// TestWatchBurst: 10 000 files created directly in a directory the kernel
// knows do not stall the mount: other requests keep being answered, and
// the directory shows all of them soon after.
func TestWatchBurst(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Config: watchedConfig(clamd)})
	m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	mustDo(t, os.Mkdir(m.Backing("burst"), 0o755))
	putFile(t, m.Backing("probe"), []byte("probe\n"))
	if _, _, ok := waitView(t, m, ".", []string{"burst", "probe"}, false, watchBound); !ok {
		t.Fatal("the mount does not show the setup")
	}

	const files = 10000
	done := make(chan error, 1)
	go func() {
		for i := range files {
			fd, err := unix.Open(filepath.Join(m.Backing("burst"), fmt.Sprintf("f%05d", i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				done <- err
				return
			}
			unix.Close(fd)
		}
		done <- nil
	}()
	// Meanwhile the mount answers: each probe is a stat and a listing
	// of the root, and none may take long.
	probes, slowest := 0, time.Duration(0)
	m.Within(t, 2*time.Minute, "probing during the burst", func() {
		for {
			select {
			case err := <-done:
				mustDo(t, err)
				return
			default:
			}
			start := time.Now()
			var st unix.Stat_t
			mustDo(t, unix.Stat(m.Path("probe"), &st))
			_, err := os.ReadDir(m.Target)
			mustDo(t, err)
			slowest = max(slowest, time.Since(start))
			probes++
		}
	})
	t.Logf("%d probes during the burst, the slowest %v", probes, slowest.Round(time.Microsecond))
	if slowest > time.Second {
		t.Errorf("a probe took %v during the burst", slowest)
	}
	start := time.Now()
	if got, want, ok := waitView(t, m, ".", []string{"burst"}, true, 20*time.Second); !ok {
		t.Fatalf("after the burst, the mount shows\n%.300s\nthe backing directory\n%.300s", got, want)
	}
	t.Logf("the burst shown %v after it ended", time.Since(start).Round(time.Millisecond))
}

// TestWatchQueueOverflow: when changes come faster than the watcher
// passes them on (a queue of 4 here), it invalidates everything, logs
// it once, and the mount still shows every change.
func TestWatchQueueOverflow(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	t.Setenv("CLAMFUSE_TEST_WATCH_QUEUE", "4")
	m := mounttest.Start(t, mounttest.Options{Config: watchedConfig(clamd)})
	m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	const n = 200
	var paths []string
	for i := range n {
		p := fmt.Sprintf("f%03d", i)
		putFile(t, m.Backing(p), []byte(p))
		paths = append(paths, p)
	}
	if _, _, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
		t.Fatal("the mount does not show the setup")
	}
	for _, p := range paths {
		mustDo(t, os.Chmod(m.Backing(p), 0o600))
	}
	if got, want, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
		t.Fatalf("after an overflow, the mount shows\n%.500s\nthe backing directory\n%.500s", got, want)
	}
	m.WaitLogLines(t, 5*time.Second, "level=WARN", "invalidating every cached name and attribute")
	if k := len(m.Log.Lines("level=WARN msg=\"changes in the backing directory came faster")); k != 1 {
		t.Errorf("the overflow is logged %d times at WARN, want once", k)
	}
}

// TestWatchSubmount: a filesystem mounted beneath the source (a tmpfs
// here) is watched too, once the kernel meets it.
func TestWatchSubmount(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	base := openDir(t, "cfwsub")
	src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
	mustDo(t, os.Mkdir(src, 0o755))
	mustDo(t, os.Mkdir(mnt, 0o755))
	mustDo(t, os.Mkdir(filepath.Join(src, "sub"), 0o755))
	mustDo(t, unix.Mount("tmpfs", filepath.Join(src, "sub"), "tmpfs", 0, "size=16m,mode=0755"))
	unmountAtCleanup(t, filepath.Join(src, "sub")) // after clamfuse stops
	putFile(t, filepath.Join(src, "sub", "f"), []byte("on tmpfs\n"))
	m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: watchedConfig(clamd)})
	m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	paths := []string{"sub", "sub/f"}
	if _, _, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
		t.Fatal("the mount does not show the setup")
	}
	mustDo(t, os.Chmod(filepath.Join(src, "sub", "f"), 0o600))
	putFile(t, filepath.Join(src, "sub", "g"), []byte("new on tmpfs\n"))
	paths = append(paths, "sub/g")
	if got, want, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
		t.Fatalf("a change on the tmpfs beneath the source: the mount shows\n%s\nthe backing directory\n%s", got, want)
	}
	if lines := m.Log.Lines("cannot be watched"); len(lines) > 0 {
		t.Errorf("the tmpfs was not watched: %v", lines)
	}
}

// TestWatchFallback: a backing directory on a filesystem fanotify cannot
// watch (FUSE: another clamfuse here) is served with the short timeout,
// which the log says, and a change made there shows once it runs out.
func TestWatchFallback(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	base := openDir(t, "cfwfb")
	fuseRoot := clamfuseFUSE(t, base, clamd)
	src, mnt := filepath.Join(fuseRoot, "src"), filepath.Join(base, "mnt")
	mustDo(t, os.Mkdir(src, 0o755))
	mustDo(t, os.Mkdir(mnt, 0o755))
	putFile(t, filepath.Join(src, "f"), []byte("on FUSE\n"))
	config := fmt.Sprintf("[clamd]\naddress = %q\n[mount]\nattr_timeout = \"1s\"\nwatched_attr_timeout = \"1h\"\n", clamd.Address())
	m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: config})
	m.WaitLogLines(t, 10*time.Second, "level=INFO", "within mount.attr_timeout", "cannot be watched", "fanotify_mark")
	m.WaitLogLines(t, 10*time.Second, "msg=mounted", "invalidation=false")
	if _, _, ok := waitView(t, m, ".", []string{"f"}, false, watchBound); !ok {
		t.Fatal("the mount does not show the setup")
	}
	// Changed through the inner clamfuse's backing directory: the outer
	// mount sees it once its 1 s attribute timeout runs out.
	mustDo(t, os.Chmod(filepath.Join(base, "orig", "src", "f"), 0o600))
	start := time.Now()
	if got, want, ok := waitView(t, m, ".", []string{"f"}, false, 5*time.Second); !ok {
		t.Fatalf("with the short timeout, the mount still shows\n%s\nthe backing directory\n%s", got, want)
	}
	t.Logf("shown after %v (attr_timeout 1s)", time.Since(start).Round(time.Millisecond))
}

// TestWatchQuarantine: a file clamfuse moves to the quarantine is gone
// from the mount at once, its directory's attributes too, though the
// kernel trusted them for an hour: clamfuse's own change, which the
// watcher ignores, reaches the kernel too.
func TestWatchQuarantine(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	base := openDir(t, "cfwq")
	q := filepath.Join(base, "quarantine")
	mustDo(t, os.Mkdir(q, 0o700))
	config := watchedConfig(clamd) + fmt.Sprintf("[actions]\nquarantine_dir = %q\n", q)
	m := mounttest.Start(t, mounttest.Options{Config: config})
	m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	mustDo(t, os.Mkdir(m.Backing("d"), 0o755))
	putFile(t, m.Backing("d/eicar.com"), clamdtest.EICAR())
	paths := []string{".", "eicar.com"}
	if _, _, ok := waitView(t, m, "d", paths, false, watchBound); !ok {
		t.Fatal("the mount does not show the setup")
	}
	pin(t, m.Path("d"), paths)
	wantEACCES(t, m, m.Path("d/eicar.com"))
	m.WaitLogLines(t, 10*time.Second, "quarantined to")
	if got, want, ok := waitView(t, m, "d", paths, false, watchBound); !ok {
		t.Fatalf("after the quarantine, the mount shows\n%s\nthe backing directory\n%s", got, want)
	}
}

// TestWatchBackingKinds: on each kind of backing filesystem, a change
// made directly in the backing directory shows through the mount within
// watchBound: by invalidation where the filesystem can be watched, by the
// 1 s attr_timeout where it cannot (the log says which).
func TestWatchBackingKinds(t *testing.T) {
	mounttest.Require(t)
	for _, kind := range backingKinds() {
		if kind.name == "ext4" || kind.name == "fuse-clamfuse" {
			continue // the root filesystem here; TestWatchFallback
		}
		t.Run(kind.name, func(t *testing.T) {
			requireBackingTools(t, kind)
			base := openDir(t, "cfwk-"+kind.name)
			clamd := clamdtest.New(t, clamdtest.Options{})
			root := kind.mount(t, base, clamd)
			t.Cleanup(func() { clamd.Stop() }) // before the unmount
			src, mnt := filepath.Join(root, "src"), filepath.Join(base, "mnt")
			mustDo(t, os.MkdirAll(filepath.Join(src, "d"), 0o755))
			mustDo(t, os.Mkdir(mnt, 0o755))
			putFile(t, filepath.Join(src, "d", "f"), []byte("first\n"))
			paths := []string{"d", "d/f", "d/g"}
			if kind.name == "btrfs" {
				// A subvolume: another st_dev, the same superblock.
				mustRun(t, "btrfs", "-q", "subvolume", "create", filepath.Join(src, "sv"))
				putFile(t, filepath.Join(src, "sv", "f"), []byte("in a subvolume\n"))
				paths = append(paths, "sv", "sv/f", "sv/g")
			}
			m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: watchedConfig(clamd)})
			mounted := m.WaitLogLines(t, 10*time.Second, "msg=mounted")
			watching := strings.Contains(mounted[0], "invalidation=true")
			t.Logf("%s: invalidation %v %v", kind.name, watching, m.Log.Lines("cannot be watched"))
			if _, _, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
				t.Fatal("the mount does not show the setup")
			}
			pin(t, mnt, paths)
			mustDo(t, os.Chmod(filepath.Join(src, "d", "f"), 0o600))
			putFile(t, filepath.Join(src, "d", "g"), []byte("new\n"))
			if kind.name == "btrfs" {
				mustDo(t, os.Chmod(filepath.Join(src, "sv", "f"), 0o600))
				putFile(t, filepath.Join(src, "sv", "g"), []byte("new\n"))
			}
			start := time.Now()
			if got, want, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
				t.Fatalf("the mount still shows, %v after the change:\n%s\nthe backing directory:\n%s", watchBound, got, want)
			}
			t.Logf("%s: shown after %v; %v", kind.name, time.Since(start).Round(time.Millisecond), m.Log.Lines("cannot be watched"))
		})
	}
}

// TestWatchOverflowRace: two names exchanged directly in the backing
// directory again and again while processes open them through the mount,
// with a queue of 4 pending invalidations, so that the watcher keeps
// giving up on precise invalidation and invalidates everything it knows.
// Meanwhile each open has clamfuse look for the node's names, and forget
// those that lead elsewhere now, though the kernel may still cache them
// (their invalidation lost to the overflow): those must be expired too.
// Once the exchanges stop, the mount shows the backing directory within
// watchBound, round after round. (TestHostileSwapToFIFO found this: its
// readers stayed parked on a FIFO that no name led to any more.)
func TestWatchOverflowRace(t *testing.T) {
	mounttest.Require(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	t.Setenv("CLAMFUSE_TEST_WATCH_QUEUE", "4")
	m := mounttest.Start(t, mounttest.Options{Config: watchedConfig(clamd)})
	m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	putFile(t, m.Backing("a"), nil) // empty: no scans
	putFile(t, m.Backing("b"), []byte{})
	mustDo(t, os.Chmod(m.Backing("b"), 0o640))
	paths := []string{"a", "b"}
	if _, _, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
		t.Fatal("the mount does not show the setup")
	}
	pin(t, m.Target, paths)
	const rounds = 5
	var swaps, ops atomic.Int64
	for round := 1; round <= rounds; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mustDo(t, unix.Renameat2(unix.AT_FDCWD, m.Backing("a"), unix.AT_FDCWD, m.Backing("b"), unix.RENAME_EXCHANGE))
				swaps.Add(1)
			}
		})
		// Readers of a, and a writer of b now and then, as in
		// TestHostileSwapToFIFO: each open has clamfuse look for the
		// node's name, and drop those that lead elsewhere now.
		for range 6 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if fd, err := unix.Open(m.Path("a"), unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
						unix.Close(fd)
					}
					ops.Add(1)
				}
			})
		}
		wg.Go(func() {
			every(stop, time.Millisecond, func() {
				if fd, err := unix.Open(m.Path("b"), unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
					unix.Close(fd)
				}
				ops.Add(1)
			})
		})
		m.Within(t, time.Minute, "racing", func() {
			time.Sleep(time.Second) // the length of the race, not a wait for an event
			close(stop)
			wg.Wait()
		})
		if got, want, ok := waitView(t, m, ".", paths, false, watchBound); !ok {
			t.Fatalf("round %d: %v after the exchanges stopped, the mount shows\n%s\nthe backing directory\n%s", round, watchBound, got, want)
		}
	}
	t.Logf("%d exchanges, %d opens through the mount in %d rounds", swaps.Load(), ops.Load(), rounds)
}

// TestWatchHeldDirectoryLock: an unprivileged user holds the kernel's
// lock of a directory of the mount for as long as they like: getdents(2)
// into memory mapped from a file of a FUSE filesystem of their own
// (fusermount3; here the bench's floorfs, stopped) that does not answer
// the page fault. A change made behind the mount in that directory then
// needs a notification that waits for the lock. Changes in every other
// directory must still show within watchBound (before notifications were
// sent one after the other, the first stalled them all, for up to
// watched_attr_timeout, an hour), and the held directory's once the user
// lets go.
func TestWatchHeldDirectoryLock(t *testing.T) {
	fsopBinary(t)
	mounttest.Require(t)
	user := newTestUser(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	src, mnt := mountDirs(t, "cfh")
	m := mounttest.Start(t, mounttest.Options{Source: src, Target: mnt, Config: watchedConfig(clamd), Args: []string{"--allow-other"}})
	m.WaitLogLines(t, 10*time.Second, "watching the backing filesystem")
	for _, d := range []string{"held", "other"} {
		mustDo(t, os.Mkdir(m.Backing(d), 0o755))
		putFile(t, m.Backing(d+"/f"), []byte("before\n"))
		if got, want, ok := waitView(t, m, d, []string{".", "f"}, true, watchBound); !ok {
			t.Fatalf("before the change, the mount shows:\n%s\nthe backing directory:\n%s", got, want)
		}
		pin(t, m.Path(d), []string{".", "f"})
	}

	held := holdDirs(t, user, []string{m.Path("held")})

	// A change in the held directory: its notification waits.
	mustDo(t, os.Remove(m.Backing("held/f")))
	// A change elsewhere shows.
	putFile(t, m.Backing("other/f"), []byte("after, longer\n"))
	start := time.Now()
	if got, want, ok := waitView(t, m, "other", []string{".", "f"}, false, watchBound); !ok {
		t.Fatalf("with another directory's lock held, a change elsewhere does not show %v after it:\n%s\nthe backing directory:\n%s", watchBound, got, want)
	}
	t.Logf("a change elsewhere shown after %v", time.Since(start).Round(time.Millisecond))
	m.WaitLogLines(t, 10*time.Second, "waits for a lock another process holds")
	if got, _, ok := waitView(t, m, "held", []string{".", "f"}, false, 0); ok {
		t.Fatalf("the held directory shows the change while its lock is held: the case proves nothing:\n%s", got)
	}

	// The user lets go: the held directory's change shows too.
	held.release(t)
	if got, want, ok := waitView(t, m, "held", []string{".", "f"}, false, watchBound); !ok {
		t.Fatalf("once the lock is free, the held directory still shows, %v after:\n%s\nthe backing directory:\n%s", watchBound, got, want)
	}
}

// waitBlocked waits until a thread of process pid sleeps uninterruptibly
// in the kernel (state D), for d at most, and reports whether one did.
func waitBlocked(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for blockedTasks(pid) == 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polls a condition
	}
	return true
}

// blockedTasks is the number of threads of process pid waiting in the
// kernel uninterruptibly (state D): for a lock, or a page of a FUSE file.
func blockedTasks(pid int) int {
	n := 0
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i:]), ") D") {
			n++
		}
	}
	return n
}

var floorTool builtTool

// floorFile mounts the bench's floorfs (test/cmd/bench/floor/floorfs.c,
// built with gcc: a FUSE server in C that mirrors a directory read-only,
// allow_other, without passthrough, as any user's own FUSE filesystem
// is) on a directory holding one file of size bytes, and returns that
// file's path through it and floorfs's process. Unmounted at cleanup.
func floorFile(t *testing.T, size int) (string, *fuseServer) {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		testenv.Skip(t, "gcc not installed (Debian package gcc): cannot build floorfs")
	}
	floorBin := floorTool.get(t, "floorfs", func(out string) *exec.Cmd {
		return exec.Command(gcc, "-O2", "-o", out, filepath.Join("cmd", "bench", "floor", "floorfs.c"))
	})
	base := openDir(t, "cff")
	src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
	mustDo(t, os.Mkdir(src, 0o755))
	mustDo(t, os.Mkdir(mnt, 0o755))
	putFile(t, filepath.Join(src, "f"), make([]byte, size))
	cmd := exec.Command(floorBin, src, mnt)
	log, exited := startServer(t, cmd)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		_ = cmd.Process.Kill()
		<-exited
	})
	waitFuseMount(t, mnt, "floorfs", exited, log)
	return filepath.Join(mnt, "f"), &fuseServer{p: cmd.Process}
}

// fuseServer is the process of a FUSE server a test runs: stopped, it
// answers nothing.
type fuseServer struct {
	p       *os.Process
	stopped bool
}

// stop stops the server until resume, or the test's end.
func (s *fuseServer) stop(t *testing.T) {
	t.Helper()
	mustDo(t, s.p.Signal(syscall.SIGSTOP))
	s.stopped = true
	t.Cleanup(s.resume)
}

// resume lets a stopped server go on.
func (s *fuseServer) resume() {
	if s.stopped {
		s.stopped = false
		_ = s.p.Signal(syscall.SIGCONT)
	}
}

// startServer starts cmd, a FUSE server, with its output to the buffer
// it returns, killed if the test binary dies, and returns a channel
// closed once it has exited.
func startServer(t *testing.T, cmd *exec.Cmd) (*lockedBuffer, <-chan struct{}) {
	t.Helper()
	log := new(lockedBuffer)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	mustDo(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	return log, exited
}

// waitFuseMount waits until the FUSE server what, started with its output
// to log, has mounted dir, and fails the test if it exits first or takes
// over 20 s.
func waitFuseMount(t *testing.T, dir, what string, exited <-chan struct{}, log *lockedBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !mounttest.IsFuseMount(dir) {
		select {
		case <-exited:
			t.Fatalf("%s exited before mounting:\n%s", what, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 20s:\n%s", what, log.String())
		}
		time.Sleep(10 * time.Millisecond) // polls a condition
	}
}
