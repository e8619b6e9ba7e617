package test

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
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
