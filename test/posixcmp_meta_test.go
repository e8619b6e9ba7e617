package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

// Cases of the differential suite (posixCases) for renameat2's flags and
// O_TMPFILE, which bazil.org/fuse did not have (issue #12).

func caseRenameat2(root string) (string, error) {
	var r rec
	p := func(s string) string { return filepath.Join(root, s) }
	rename2 := func(a, b string, fl uint) error {
		return unix.Renameat2(unix.AT_FDCWD, p(a), unix.AT_FDCWD, p(b), fl)
	}
	mustWrite(p("a"), "A")
	mustWrite(p("b"), "B")
	mustDoP(os.Mkdir(p("d"), 0o755))
	mustWrite(p("d/x"), "X")
	r.do("noreplace onto existing", rename2("a", "b", unix.RENAME_NOREPLACE))
	r.val("a", "%s", content(p("a")))
	r.val("b", "%s", content(p("b")))
	r.do("noreplace to new name", rename2("a", "c", unix.RENAME_NOREPLACE))
	r.val("a", "%s", statLine(p("a")))
	r.val("c", "%s", content(p("c")))
	r.do("noreplace onto dir", rename2("c", "d", unix.RENAME_NOREPLACE))
	r.do("noreplace missing source", rename2("nothing", "e", unix.RENAME_NOREPLACE))
	r.do("exchange files", rename2("b", "c", unix.RENAME_EXCHANGE))
	r.val("b", "%s", content(p("b")))
	r.val("c", "%s", content(p("c")))
	r.do("exchange with missing", rename2("b", "nothing", unix.RENAME_EXCHANGE))
	r.val("b", "%s", content(p("b")))
	r.do("exchange across dirs", rename2("b", "d/x", unix.RENAME_EXCHANGE))
	r.val("b", "%s", content(p("b")))
	r.val("d/x", "%s", content(p("d/x")))
	r.do("exchange file and dir", rename2("c", "d", unix.RENAME_EXCHANGE))
	r.val("c", "%s", statLine(p("c")))
	r.val("c/x", "%s", content(p("c/x")))
	r.val("d", "%s", content(p("d")))
	r.do("exchange dir back", rename2("c", "d", unix.RENAME_EXCHANGE))
	r.val("d/x", "%s", content(p("d/x")))
	r.do("exchange onto itself", rename2("b", "b", unix.RENAME_EXCHANGE))
	r.val("b", "%s", content(p("b")))
	mustDoP(os.Symlink("b", p("l")))
	r.do("exchange file and symlink", rename2("c", "l", unix.RENAME_EXCHANGE))
	r.val("c", "%s", readlinkLine(p("c")))
	r.val("l", "%s", content(p("l")))
	r.do("noreplace and exchange", rename2("b", "l", unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE))
	r.do("unknown flag", rename2("b", "f", 1<<5))
	// A whiteout where the backing filesystem has them (root has
	// CAP_MKNOD): a character device 0:0 is left at the old name.
	r.do("whiteout", rename2("b", "w", unix.RENAME_WHITEOUT))
	r.val("b", "%s", statLine(p("b")))
	r.val("w", "%s", content(p("w")))
	r.do("whiteout and exchange", rename2("w", "l", unix.RENAME_WHITEOUT|unix.RENAME_EXCHANGE))
	r.val("tree", "%s", treeLine(root))
	return r.done()
}

// tmpfile opens an O_TMPFILE file in dir with flags (besides O_TMPFILE)
// and mode, writes data to it, and links it as name ("" for none).
func tmpfile(dir string, flags int, mode uint32, data, name string) error {
	fd, err := unix.Open(dir, unix.O_TMPFILE|flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(data)); err != nil {
		return err
	}
	if name == "" {
		return nil
	}
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
}

func caseTmpfile(root string) (string, error) {
	var r rec
	p := func(s string) string { return filepath.Join(root, s) }
	mustDoP(os.Mkdir(p("d"), 0o755))
	withUmask(0o022, func() {
		r.do("tmpfile linked", tmpfile(root, unix.O_RDWR, 0o666, "T1", p("t1")))
		r.do("tmpfile write-only linked", tmpfile(p("d"), unix.O_WRONLY, 0o640, "T2", p("d/t2")))
		r.do("tmpfile unlinked", tmpfile(root, unix.O_RDWR, 0o600, "gone", ""))
		r.do("tmpfile O_EXCL linked", tmpfile(root, unix.O_RDWR|unix.O_EXCL, 0o600, "X", p("x")))
		r.do("tmpfile read-only", tmpfile(root, unix.O_RDONLY, 0o600, "", ""))
		r.do("tmpfile in missing dir", tmpfile(p("nodir"), unix.O_RDWR, 0o600, "", ""))
		r.do("tmpfile in a file", tmpfile(p("t1"), unix.O_RDWR, 0o600, "", ""))
		r.do("tmpfile linked over existing", tmpfile(root, unix.O_RDWR, 0o600, "Y", p("t1")))
	})
	withUmask(0o077, func() {
		r.do("tmpfile umask 077", tmpfile(root, unix.O_RDWR, 0o666, "T3", p("t3")))
	})
	r.val("t1", "%s %s", statLine(p("t1")), content(p("t1")))
	r.val("d/t2", "%s %s", statLine(p("d/t2")), content(p("d/t2")))
	r.val("t3", "%s %s", statLine(p("t3")), content(p("t3")))
	// Written and read back through its descriptor, linked twice.
	fd, err := unix.Open(root, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	if r.do("tmpfile open", err) {
		_, err = unix.Pwrite(fd, []byte("hello tmpfile"), 0)
		r.do("pwrite", err)
		buf := make([]byte, 64)
		k, err := unix.Pread(fd, buf, 6)
		r.do("pread", err)
		r.val("pread", "%q", buf[:max(k, 0)])
		var st unix.Stat_t
		r.do("fstat", unix.Fstat(fd, &st))
		r.val("fstat", "size=%d nlink=%d mode=%04o", st.Size, st.Nlink, st.Mode&0o7777)
		self := "/proc/self/fd/" + strconv.Itoa(fd)
		r.do("link", unix.Linkat(unix.AT_FDCWD, self, unix.AT_FDCWD, p("t4"), unix.AT_SYMLINK_FOLLOW))
		r.do("link again", unix.Linkat(unix.AT_FDCWD, self, unix.AT_FDCWD, p("d/t4"), unix.AT_SYMLINK_FOLLOW))
		r.do("fstat", unix.Fstat(fd, &st))
		r.val("fstat", "size=%d nlink=%d", st.Size, st.Nlink)
		_, err = unix.Pwrite(fd, []byte("!"), 13)
		r.do("pwrite after link", err)
		r.val("t4 while open", "%s", content(p("t4")))
		unix.Close(fd)
	}
	r.val("t4", "%s %s", statLine(p("t4")), content(p("t4")))
	r.val("tree", "%s", treeLine(root))
	return r.done()
}

// TestPosixCompareReaddirPlus is TestPosixCompare with READDIRPLUS asked
// for every listing, and never (the default, "auto", is TestPosixCompare's).
func TestPosixCompareReaddirPlus(t *testing.T) {
	mounttest.Require(t)
	fsopBinary(t)
	clamd := clamdtest.New(t, clamdtest.Options{})
	for _, mode := range []string{"on", "off"} {
		t.Run(mode, func(t *testing.T) {
			m, big := posixMounts(t, clamd, mounttest.Options{Config: fmt.Sprintf("[mount]\nreaddirplus = %q\n", mode)}, mounttest.Options{})
			posixCompare(t, t.TempDir(), m, big, posixCases())
		})
	}
}
