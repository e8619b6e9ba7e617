package test

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/clamdtest"
	"github.com/clamfuse/clamfuse/test/mounttest"
)

var (
	fsxSeedFlag = flag.Uint64("fsx.seed", 0, "TestFSX: replay this seed (also CLAMFUSE_FSX_SEED); 0 picks one from the clock")
	fsxOpsFlag  = flag.Int("fsx.ops", 0, "TestFSX: number of operations (default 3000, 30000 with CLAMFUSE_SOAK=1)")
)

// TestFSX is a randomized differential exerciser in the spirit of fsx: the
// same seeded sequence of operations (create, write at random offsets,
// truncate, rename, link, unlink, mkdir, rmdir, chmod, symlink, reads,
// and reads and writes through descriptors held open across renames and
// unlinks) runs on a native directory and on a clamfuse mount. Each
// operation must give the same errno and result on both. After each one,
// the entries it named and their directories must agree in type, size,
// mode, link count, symlink target and listing (times excepted), and the
// files it touched in bytes; every 10 operations the whole trees are
// compared that way, and every 200 all contents.
//
// The seed is logged; replay with -fsx.seed=N or CLAMFUSE_FSX_SEED=N.
//
// It runs in both passthrough modes (ptMode), with the same operations;
// in passthrough mode a chmod leaves the set-ID bits out: a write by root
// through a descriptor in passthrough clears them (README, Passthrough),
// which TestPosixCompare pins.
func TestFSX(t *testing.T) { inPtModes(t, testFSX) }

func testFSX(t *testing.T, pm ptMode) {
	seed := *fsxSeedFlag
	if s := os.Getenv("CLAMFUSE_FSX_SEED"); s != "" && seed == 0 {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CLAMFUSE_FSX_SEED: %v", err)
		}
		seed = v
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	nops := *fsxOpsFlag
	if nops == 0 {
		nops = 3000
		if os.Getenv("CLAMFUSE_SOAK") != "" {
			nops = 30000
		}
	}
	t.Logf("fsx seed %d, %d operations (replay: go test ./test/ -run TestFSX -fsx.seed=%d)", seed, nops, seed)

	clamd := clamdtest.New(t, clamdtest.Options{})
	m := mounttest.Start(t, mounttest.Options{Config: "[mount]\n" + pm.toml + "\n", Args: []string{"--clamd", clamd.Address(), "--timeout", "30s"}})
	pm.check(t, m)
	x := &fsx{
		noSetID: pm.on,
		t:       t,
		rng:     rand.New(rand.NewPCG(seed, seed^0x5eed)),
		roots:   [2]string{filepath.Join(t.TempDir(), "fsx"), m.Path("fsx")},
		seed:    seed,
	}
	for _, r := range x.roots {
		mustDo(t, os.Mkdir(r, 0o755))
	}
	defer x.closeAll()
	start := time.Now()
	m.Within(t, 10*time.Minute, "fsx", func() {
		for i := 0; i < nops && !t.Failed(); i++ {
			x.step(i)
		}
	})
	if !t.Failed() {
		x.compareTree(nops, true)
	}
	t.Logf("%d operations in %v; errno outcomes: %v", nops, time.Since(start).Round(time.Millisecond), x.outcomes)
}

type fsx struct {
	noSetID  bool // chmod leaves S_ISUID and S_ISGID out
	t        *testing.T
	rng      *rand.Rand
	roots    [2]string // native, mount
	seed     uint64
	held     []heldFD
	history  []string
	touched  []string // relative paths whose bytes to compare after the step
	paths    []string // relative paths whose metadata to compare after the step
	outcomes map[string]int
}

// heldFD is one file open in both trees.
type heldFD struct {
	fd    [2]int
	name  string // the path it was opened by
	flags int
}

var fsxNames = []string{"a", "b", "c", "d", "e", "f", "g", "h"}

// entries lists the native tree, relative paths, sorted: the state from
// which both trees' operations are drawn.
func (x *fsx) entries() (files, dirs, all []string) {
	dirs = []string{"."}
	filepath.WalkDir(x.roots[0], func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == x.roots[0] {
			return nil
		}
		rel, _ := filepath.Rel(x.roots[0], p)
		all = append(all, rel)
		if d.IsDir() {
			dirs = append(dirs, rel)
		} else if d.Type().IsRegular() {
			files = append(files, rel)
		}
		return nil
	})
	return files, dirs, all
}

func (x *fsx) pick(list []string) string {
	if len(list) == 0 {
		return "missing"
	}
	return list[x.rng.IntN(len(list))]
}

// newPath is a name in an existing directory, often an existing one.
func (x *fsx) newPath(dirs []string) string {
	return filepath.Join(x.pick(dirs), fsxNames[x.rng.IntN(len(fsxNames))])
}

func (x *fsx) data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(x.rng.Uint32())
	}
	if x.rng.IntN(4) == 0 {
		// Compressible runs too.
		for i := range b {
			b[i] = 'a' + byte(i%7)
		}
	}
	return b
}

func (x *fsx) size() int64 {
	switch x.rng.IntN(4) {
	case 0:
		return int64(x.rng.IntN(100))
	case 1:
		return int64(x.rng.IntN(8192))
	default:
		return int64(x.rng.IntN(300 << 10))
	}
}

// step draws one operation from the native tree's state and runs it on
// both trees.
func (x *fsx) step(i int) {
	files, dirs, all := x.entries()
	var desc string
	var op func(root string, which int) (string, error)
	x.touched, x.paths = x.touched[:0], x.paths[:0]
	k := x.rng.IntN(20)
	if len(all) > 120 && x.rng.IntN(2) == 0 {
		// Keep the trees small enough to compare often: prune.
		k = []int{11, 13}[x.rng.IntN(2)]
	}
	switch {
	case k < 2:
		p := x.newPath(dirs)
		flags := unix.O_CREAT | unix.O_WRONLY
		if x.rng.IntN(2) == 0 {
			flags |= unix.O_EXCL
		}
		if x.rng.IntN(4) == 0 {
			flags |= unix.O_TRUNC
		}
		mode := []uint32{0o644, 0o600, 0o755, 0o640}[x.rng.IntN(4)]
		desc = fmt.Sprintf("create %s flags=%#x mode=%04o", p, flags, mode)
		x.touched = append(x.touched, p)
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) {
			return "", openClose(filepath.Join(root, p), flags, mode)
		}
	case k < 6:
		p := x.pick(files)
		off, data := x.size(), x.data(1+x.rng.IntN(64<<10))
		if x.rng.IntN(3) == 0 {
			data = data[:1+x.rng.IntN(min(len(data), 100))]
		}
		appendMode := x.rng.IntN(5) == 0
		desc = fmt.Sprintf("write %s off=%d len=%d append=%v", p, off, len(data), appendMode)
		x.touched = append(x.touched, p)
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) {
			flags := unix.O_WRONLY
			if appendMode {
				flags |= unix.O_APPEND
			}
			fd, err := unix.Open(filepath.Join(root, p), flags|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(fd)
			n, err := unix.Pwrite(fd, data, off)
			return strconv.Itoa(n), err
		}
	case k < 8:
		p := x.pick(files)
		size := x.size()
		desc = fmt.Sprintf("truncate %s %d", p, size)
		x.touched = append(x.touched, p)
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) { return "", unix.Truncate(filepath.Join(root, p), size) }
	case k < 10:
		from, to := x.pick(all), x.newPath(dirs)
		if x.rng.IntN(3) == 0 {
			to = x.pick(all)
		}
		desc = fmt.Sprintf("rename %s %s", from, to)
		x.touched = append(x.touched, to)
		x.paths = append(x.paths, from, to)
		op = func(root string, _ int) (string, error) {
			return "", unix.Rename(filepath.Join(root, from), filepath.Join(root, to))
		}
	case k < 11:
		from, to := x.pick(files), x.newPath(dirs)
		desc = fmt.Sprintf("link %s %s", from, to)
		x.touched = append(x.touched, to)
		x.paths = append(x.paths, from, to)
		op = func(root string, _ int) (string, error) {
			return "", unix.Link(filepath.Join(root, from), filepath.Join(root, to))
		}
	case k < 12:
		p := x.pick(all)
		desc = "unlink " + p
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) { return "", unix.Unlink(filepath.Join(root, p)) }
	case k < 13:
		p := x.newPath(dirs)
		if len(strings.Split(p, "/")) > 3 {
			p = filepath.Base(p)
		}
		desc = "mkdir " + p
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) { return "", unix.Mkdir(filepath.Join(root, p), 0o755) }
	case k < 14:
		p := x.pick(dirs[1:]) // not the root itself
		desc = "rmdir " + p
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) { return "", unix.Rmdir(filepath.Join(root, p)) }
	case k < 15:
		p := x.pick(all)
		mode := []uint32{0o644, 0o600, 0o755, 0o700, 0o444, 0o4755, 0o2750}[x.rng.IntN(7)]
		if x.noSetID {
			mode &^= unix.S_ISUID | unix.S_ISGID
		}
		desc = fmt.Sprintf("chmod %s %04o", p, mode)
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) { return "", unix.Chmod(filepath.Join(root, p), mode) }
	case k < 16:
		p := x.newPath(dirs)
		target := []string{"a", "../b", "nowhere", "d/e", strings.Repeat("long/", 50)}[x.rng.IntN(5)]
		desc = fmt.Sprintf("symlink %s -> %s", p, target)
		x.paths = append(x.paths, p)
		op = func(root string, _ int) (string, error) { return "", unix.Symlink(target, filepath.Join(root, p)) }
	case k < 18:
		p := x.pick(files)
		off, n := x.size(), 1+x.rng.IntN(128<<10)
		desc = fmt.Sprintf("read %s off=%d len=%d", p, off, n)
		op = func(root string, _ int) (string, error) {
			fd, err := unix.Open(filepath.Join(root, p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(fd)
			buf := make([]byte, n)
			got, err := unix.Pread(fd, buf, off)
			return describeBytes(buf[:max(got, 0)]), err
		}
	default:
		desc, op = x.heldOp(files)
	}
	var res [2]string
	var errs [2]error
	for w, root := range x.roots {
		res[w], errs[w] = op(root, w)
	}
	x.history = append(x.history, fmt.Sprintf("%d: %s => %s %s", i, desc, errnoName(errs[0]), res[0]))
	if x.outcomes == nil {
		x.outcomes = map[string]int{}
	}
	x.outcomes[errnoName(errs[0])]++
	if res[0] != res[1] || errnoName(errs[0]) != errnoName(errs[1]) {
		x.fail(i, "%s: native %s %s, mount %s %s", desc, errnoName(errs[0]), res[0], errnoName(errs[1]), res[1])
		return
	}
	if i%10 == 9 {
		x.compareTree(i, i%200 == 199)
	} else {
		x.comparePaths(i)
	}
}

// comparePaths compares the metadata of the paths the last step named,
// the listings of their directories, and the bytes of the files it
// touched: the cheap check after every step (compareTree, every tenth
// step, catches effects elsewhere, such as link counts).
func (x *fsx) comparePaths(i int) {
	seen := map[string]bool{}
	for _, p := range x.paths {
		for _, q := range []string{p, filepath.Dir(p)} {
			if seen[q] {
				continue
			}
			seen[q] = true
			var got [2]string
			for w, root := range x.roots {
				got[w] = fsxDescribe(filepath.Join(root, q))
			}
			if got[0] != got[1] {
				x.fail(i, "%s differs after the operation:\n  native: %s\n  mount:  %s", q, got[0], got[1])
				return
			}
		}
	}
	x.compareContents(i, x.touched)
}

// fsxDescribe is the metadata of p two trees must agree on; for a
// directory, its sorted entry names too.
func fsxDescribe(p string) string {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return errnoName(err)
	}
	s := fmt.Sprintf("%s %04o nlink=%d", mounttest.TypeName(st.Mode), st.Mode&0o7777, st.Nlink)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		s += fmt.Sprintf(" size=%d", st.Size)
	case unix.S_IFLNK:
		target, _ := os.Readlink(p)
		s += " -> " + target
	case unix.S_IFDIR:
		ents, err := os.ReadDir(p)
		names := []string{errnoName(err)}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		s += " [" + strings.Join(names, " ") + "]"
	}
	return s
}

// heldOp opens, uses or closes a descriptor held in both trees.
func (x *fsx) heldOp(files []string) (string, func(string, int) (string, error)) {
	if len(x.held) == 0 || (len(x.held) < 4 && x.rng.IntN(3) == 0) {
		p := x.pick(files)
		flags := []int{unix.O_RDONLY, unix.O_RDWR, unix.O_WRONLY}[x.rng.IntN(3)]
		h := &heldFD{name: p, flags: flags, fd: [2]int{-1, -1}}
		desc := fmt.Sprintf("hold open %s flags=%#x", p, flags)
		return desc, func(root string, w int) (string, error) {
			fd, err := unix.Open(filepath.Join(root, p), flags|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			h.fd[w] = fd
			if w == 1 {
				if h.fd[0] >= 0 {
					x.held = append(x.held, *h)
				} else {
					unix.Close(fd)
				}
			}
			return "", nil
		}
	}
	j := x.rng.IntN(len(x.held))
	h := x.held[j]
	switch x.rng.IntN(5) {
	case 0:
		desc := fmt.Sprintf("close held %s", h.name)
		return desc, func(_ string, w int) (string, error) {
			err := unix.Close(h.fd[w])
			if w == 1 {
				x.held = append(x.held[:j], x.held[j+1:]...)
			}
			return "", err
		}
	case 1, 2:
		off, data := x.size(), x.data(1+x.rng.IntN(32<<10))
		desc := fmt.Sprintf("pwrite held %s off=%d len=%d", h.name, off, len(data))
		return desc, func(_ string, w int) (string, error) {
			n, err := unix.Pwrite(h.fd[w], data, off)
			return strconv.Itoa(n), err
		}
	case 3:
		size := x.size()
		desc := fmt.Sprintf("ftruncate held %s %d", h.name, size)
		return desc, func(_ string, w int) (string, error) { return "", unix.Ftruncate(h.fd[w], size) }
	default:
		off, n := x.size(), 1+x.rng.IntN(64<<10)
		desc := fmt.Sprintf("pread held %s off=%d len=%d", h.name, off, n)
		return desc, func(_ string, w int) (string, error) {
			buf := make([]byte, n)
			got, err := unix.Pread(h.fd[w], buf, off)
			var st unix.Stat_t
			if ferr := unix.Fstat(h.fd[w], &st); ferr != nil {
				return "", ferr
			}
			return fmt.Sprintf("%s size=%d nlink=%d mode=%04o", describeBytes(buf[:max(got, 0)]), st.Size, st.Nlink, st.Mode&0o7777), err
		}
	}
}

func (x *fsx) closeAll() {
	for _, h := range x.held {
		unix.Close(h.fd[0])
		unix.Close(h.fd[1])
	}
	x.held = nil
}

// compareTree compares names and metadata of both trees, and the bytes of
// the files the last step touched (or of all files).
func (x *fsx) compareTree(i int, allContents bool) {
	var lists [2][]string
	var regs []string
	for w, root := range x.roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				lists[w] = append(lists[w], fmt.Sprintf("%s: %s", p, errnoName(err)))
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				lists[w] = append(lists[w], fmt.Sprintf("%s: %s", rel, errnoName(err)))
				return nil
			}
			line := fmt.Sprintf("%s %s %04o nlink=%d", rel, mounttest.TypeName(st.Mode), st.Mode&0o7777, st.Nlink)
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				line += fmt.Sprintf(" size=%d", st.Size)
				if w == 0 {
					regs = append(regs, rel)
				}
			case unix.S_IFLNK:
				target, _ := os.Readlink(p)
				line += " -> " + target
			}
			lists[w] = append(lists[w], line)
			return nil
		})
		sort.Strings(lists[w])
	}
	if a, b := strings.Join(lists[0], "\n"), strings.Join(lists[1], "\n"); a != b {
		x.fail(i, "trees differ after the operation:\n%s", lineDiff(a, b))
		return
	}
	if allContents {
		x.compareContents(i, regs)
	} else {
		x.compareContents(i, x.touched)
	}
}

func (x *fsx) compareContents(i int, rels []string) {
	for _, rel := range rels {
		var got [2][]byte
		var errs [2]error
		for w, root := range x.roots {
			got[w], errs[w] = os.ReadFile(filepath.Join(root, rel))
		}
		if errnoName(errs[0]) != errnoName(errs[1]) || !bytes.Equal(got[0], got[1]) {
			x.fail(i, "contents of %s differ: native %s %s, mount %s %s", rel,
				errnoName(errs[0]), describeBytes(got[0]), errnoName(errs[1]), describeBytes(got[1]))
			return
		}
	}
}

func (x *fsx) fail(i int, format string, args ...any) {
	x.t.Helper()
	from := max(0, len(x.history)-25)
	x.t.Errorf("fsx seed %d, operation %d: %s\nlast operations (native outcome):\n  %s\nreplay: go test ./test/ -run TestFSX -fsx.seed=%d",
		x.seed, i, fmt.Sprintf(format, args...), strings.Join(x.history[from:], "\n  "), x.seed)
}
