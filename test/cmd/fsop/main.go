// Command fsop performs one named file operation and prints its outcome,
// for the end-to-end tests of package test: they run it as another user
// (users_test.go) or as another process (lock conflicts), on a native
// directory and on a clamfuse mount, and compare what it prints.
//
//	fsop OP ARGS...
//
// It prints one line: "ok", "ok " followed by a result, or the errno name
// of the failure ("EACCES"). Exit status 0 whatever the outcome of the
// operation; 2 on a usage error.
//
// Operations (MODE is octal, SIZE and offsets decimal):
//
//	open PATH                 open O_RDONLY and close, reading nothing
//	open-once PATH            the same, but an EINTR is the outcome, not
//	                          retried (every other op retries it)
//	read PATH                 open O_RDONLY and read it all: "ok LEN"
//	cat PATH                  same, result is the content, %q-quoted
//	write PATH DATA           open O_WRONLY|O_TRUNC, write DATA
//	append PATH DATA          open O_WRONLY|O_APPEND, write DATA
//	create PATH MODE          open O_CREAT|O_EXCL|O_WRONLY
//	mkdir PATH MODE
//	mkfifo PATH MODE
//	mksock PATH MODE          mknod S_IFSOCK
//	symlink TARGET PATH
//	link OLD NEW
//	unlink PATH
//	rmdir PATH
//	rename OLD NEW
//	rename-noreplace OLD NEW, rename-exchange OLD NEW (renameat2)
//	tmpfile DIR MODE DATA NAME (O_TMPFILE, written, linked as NAME; "-": none)
//	chmod PATH MODE
//	chown PATH UID GID        lchown; -1 leaves an id
//	truncate PATH SIZE
//	touch PATH                utimensat(UTIME_NOW, UTIME_NOW)
//	touch-at PATH SEC NSEC    utimensat to that time, both times
//	setxattr PATH NAME VALUE
//	getxattr PATH NAME
//	lstat PATH                "ok type=reg mode=0644 uid=N gid=N nlink=N size=N"
//	flock PATH                open O_RDONLY, flock(LOCK_EX|LOCK_NB)
//	flock-sh PATH             open O_RDONLY, flock(LOCK_SH|LOCK_NB)
//	setlk PATH r|w START LEN  open O_RDWR, fcntl(F_SETLK)
//	getlk PATH r|w START LEN  open O_RDWR, fcntl(F_GETLK): "ok unlck" or
//	                          "ok w START LEN" (the conflicting lock)
//	ofd-setlk PATH r|w START LEN   fcntl(F_OFD_SETLK)
//	hold PATH COUNT           open O_RDONLY up to COUNT times, print
//	                          "held N" or "held N ERRNO", keep them open
//	                          until standard input ends
//	holddir PATH COUNT BUFSIZE  the same with O_DIRECTORY, reading
//	                          BUFSIZE bytes of entries from each
//	list PATH                 the names in the directory, sorted, comma-separated
//	creat-read PATH           open O_CREAT|O_RDONLY (0644) and read: the
//	                          content, %q-quoted
//	creat-trunc PATH          open O_CREAT|O_WRONLY|O_TRUNC (0644)
//	churn PATH                create PATH (O_EXCL, 0600) and unlink it, then
//	                          mkdir PATH (0700) and rmdir it
//	with-umask MASK OP ARGS...   OP with the umask MASK (octal)
//	repeat N MS OP ARGS...    OP up to N times or for MS milliseconds: the
//	                          count of each distinct outcome, in order of
//	                          first appearance: "ok tries=T [OUTCOME]=C ..."
//
// fsop session keeps descriptors and mappings across operations (the
// hostile tests of issue #11: one user holds a file open or mapped while
// another opens it). It reads one command a line from standard input and
// prints one outcome line for each, until end of input; besides every
// operation above, it knows (ID names a descriptor of the session, DATA
// is hexadecimal):
//
//	open ID PATH r|w|rw|rwc   open O_RDONLY, O_WRONLY, O_RDWR, O_RDWR|O_CREAT;
//	                          a suffix d adds O_DIRECT (rd, wd, rwd), wt is
//	                          O_WRONLY|O_TRUNC
//	mmap ID LEN               mmap(MAP_SHARED), writable if ID is
//	mmap-private ID LEN       mmap(MAP_PRIVATE), writable (copy on write)
//	poke ID OFF DATA          store DATA into the mapping of ID at OFF
//	msync ID                  msync(MS_SYNC) the mapping of ID
//	pwrite ID OFF DATA        pwrite DATA to ID at OFF
//	pread ID                  pread all of ID from offset 0, %q-quoted
//	dontneed ID               posix_fadvise(POSIX_FADV_DONTNEED) all of ID:
//	                          its clean pages leave the page cache
//	fstat ID                  "ok size=N mtime=SEC.NSEC ctime=SEC.NSEC"
//	getdents DIRID ID         getdents64 on the directory DIRID (opened r)
//	                          into the mapping of ID: "ok N", the bytes read
//	close ID                  munmap (if mapped) and close ID
//	calls-start lstat|open PREFIX N   lstat, or open O_RDONLY and close,
//	                          PREFIX0 ... PREFIX(N-1) at once, each on a
//	                          thread of its own, and return at once
//	calls-done                how many of those calls returned so far, and
//	                          how: "ok done=N [OUTCOME]=C ...", at once
//	calls-wait                the same once every one has returned
package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clamfuse/clamfuse/test/mounttest"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	if op := os.Args[1]; op == "hold" || op == "holddir" {
		hold(op, os.Args[2:])
		return
	}
	if os.Args[1] == "session" {
		session()
		return
	}
	fmt.Println(outcome(run(os.Args[1], os.Args[2:])))
}

func outcome(res string, err error) string {
	switch {
	case err == nil && res == "":
		return "ok"
	case err == nil:
		return "ok " + res
	default:
		return errName(err)
	}
}

// session serves commands from standard input; see the package
// documentation.
func session() {
	type desc struct {
		fd int
		m  []byte
	}
	descs := map[string]*desc{}
	var calls struct {
		sync.Mutex
		n     int            // started
		done  int            // returned
		count map[string]int // outcomes of those returned
		order []string       // outcomes in order of first appearance
		all   chan struct{}  // closed when done reaches n
	}
	callsDone := func() string {
		calls.Lock()
		defer calls.Unlock()
		out := fmt.Sprintf("done=%d", calls.done)
		for _, o := range calls.order {
			out += fmt.Sprintf(" [%s]=%d", o, calls.count[o])
		}
		return out
	}
	get := func(id string) (*desc, error) {
		if d, ok := descs[id]; ok {
			return d, nil
		}
		return nil, syscall.EBADF
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		res, err := func() (string, error) {
			a := f[1:]
			switch f[0] {
			case "open":
				nargs(a, 3)
				flags, ok := map[string]int{"r": unix.O_RDONLY, "w": unix.O_WRONLY, "rw": unix.O_RDWR, "rwc": unix.O_RDWR | unix.O_CREAT,
					"rd": unix.O_RDONLY | unix.O_DIRECT, "wd": unix.O_WRONLY | unix.O_DIRECT, "rwd": unix.O_RDWR | unix.O_DIRECT,
					"wt": unix.O_WRONLY | unix.O_TRUNC}[a[2]]
				if !ok {
					usage()
				}
				fd, err := open(a[1], flags|unix.O_CLOEXEC, 0o644)
				if err != nil {
					return "", err
				}
				descs[a[0]] = &desc{fd: fd}
				return "", nil
			case "mmap":
				nargs(a, 2)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				prot := unix.PROT_READ
				if fl, _ := unix.FcntlInt(uintptr(d.fd), unix.F_GETFL, 0); fl&unix.O_ACCMODE == unix.O_RDWR {
					prot |= unix.PROT_WRITE
				}
				d.m, err = unix.Mmap(d.fd, 0, int(num(a[1])), prot, unix.MAP_SHARED)
				return "", err
			case "mmap-private":
				nargs(a, 2)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				d.m, err = unix.Mmap(d.fd, 0, int(num(a[1])), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
				return "", err
			case "poke":
				nargs(a, 3)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				data := unhex(a[2])
				if d.m == nil || int(num(a[1]))+len(data) > len(d.m) {
					return "", syscall.EINVAL
				}
				copy(d.m[num(a[1]):], data)
				return "", nil
			case "msync":
				nargs(a, 1)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				return "", unix.Msync(d.m, unix.MS_SYNC)
			case "pwrite":
				nargs(a, 3)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				_, err = unix.Pwrite(d.fd, unhex(a[2]), num(a[1]))
				return "", err
			case "pread":
				nargs(a, 1)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				var b []byte
				buf := make([]byte, 64<<10)
				for {
					n, err := unix.Pread(d.fd, buf, int64(len(b)))
					if err != nil {
						return "", err
					}
					if n == 0 {
						return strconv.Quote(string(b)), nil
					}
					b = append(b, buf[:n]...)
				}
			case "dontneed":
				nargs(a, 1)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				return "", unix.Fadvise(d.fd, 0, 0, unix.FADV_DONTNEED)
			case "fstat":
				nargs(a, 1)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				var st unix.Stat_t
				if err := unix.Fstat(d.fd, &st); err != nil {
					return "", err
				}
				return fmt.Sprintf("size=%d mtime=%d.%09d ctime=%d.%09d", st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec), nil
			case "getdents":
				nargs(a, 2)
				dir, err := get(a[0])
				if err != nil {
					return "", err
				}
				d, err := get(a[1])
				if err != nil {
					return "", err
				}
				if d.m == nil {
					return "", syscall.EINVAL
				}
				n, err := unix.Getdents(dir.fd, d.m)
				return strconv.Itoa(n), err
			case "calls-start":
				nargs(a, 3)
				call, ok := map[string]func(string) error{
					"lstat": func(p string) error {
						var st unix.Stat_t
						return unix.Lstat(p, &st)
					},
					"open": func(p string) error {
						fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
						if err == nil {
							err = unix.Close(fd)
						}
						return err
					},
				}[a[0]]
				if !ok {
					usage()
				}
				n := int(num(a[2]))
				calls.Lock()
				calls.n, calls.done = n, 0
				calls.count, calls.order = map[string]int{}, nil
				calls.all = make(chan struct{})
				if n == 0 {
					close(calls.all)
				}
				calls.Unlock()
				for i := range n {
					go func() {
						// A blocking system call: the runtime gives each its own thread.
						o := outcome("", call(a[1]+strconv.Itoa(i)))
						calls.Lock()
						if calls.count[o] == 0 {
							calls.order = append(calls.order, o)
						}
						calls.count[o]++
						if calls.done++; calls.done == calls.n {
							close(calls.all)
						}
						calls.Unlock()
					}()
				}
				return "", nil
			case "calls-done":
				nargs(a, 0)
				return callsDone(), nil
			case "calls-wait":
				nargs(a, 0)
				calls.Lock()
				all := calls.all
				calls.Unlock()
				if all != nil {
					<-all
				}
				return callsDone(), nil
			case "close":
				nargs(a, 1)
				d, err := get(a[0])
				if err != nil {
					return "", err
				}
				delete(descs, a[0])
				if d.m != nil {
					unix.Munmap(d.m)
				}
				return "", unix.Close(d.fd)
			}
			return run(f[0], a)
		}()
		fmt.Println(outcome(res, err))
	}
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		usage()
	}
	return b
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: fsop OP ARGS... (see the package documentation)")
	os.Exit(2)
}

func errName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno%d", int(e))
	}
	return "error: " + err.Error()
}

func nargs(args []string, n int) {
	if len(args) != n {
		usage()
	}
}

func mode(s string) uint32 {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		usage()
	}
	return uint32(m)
}

func num(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		usage()
	}
	return n
}

func lockType(s string) int16 {
	switch s {
	case "r":
		return unix.F_RDLCK
	case "w":
		return unix.F_WRLCK
	}
	usage()
	return 0
}

func run(op string, a []string) (string, error) {
	switch op {
	case "list":
		nargs(a, 1)
		ents, err := os.ReadDir(a[0])
		if err != nil {
			return "", err
		}
		names := make([]string, len(ents))
		for i, e := range ents {
			names[i] = e.Name()
		}
		return strings.Join(names, ","), nil
	case "creat-read":
		nargs(a, 1)
		fd, err := unix.Open(a[0], unix.O_CREAT|unix.O_RDONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return "", err
		}
		f := os.NewFile(uintptr(fd), a[0])
		defer f.Close()
		b, err := io.ReadAll(f)
		return strconv.Quote(string(b)), err
	case "creat-trunc":
		nargs(a, 1)
		fd, err := unix.Open(a[0], unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	case "open":
		nargs(a, 1)
		fd, err := open(a[0], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	case "open-once":
		nargs(a, 1)
		fd, err := unix.Open(a[0], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	case "churn":
		nargs(a, 1)
		fd, err := unix.Open(a[0], unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return "", err
		}
		unix.Close(fd)
		if err := unix.Unlink(a[0]); err != nil {
			return "", err
		}
		if err := unix.Mkdir(a[0], 0o700); err != nil {
			return "", err
		}
		return "", unix.Rmdir(a[0])
	case "with-umask":
		if len(a) < 2 {
			usage()
		}
		unix.Umask(int(mode(a[0])))
		return run(a[1], a[2:])
	case "repeat":
		if len(a) < 3 {
			usage()
		}
		n, budget := num(a[0]), time.Duration(num(a[1]))*time.Millisecond
		counts := map[string]int{}
		var order []string
		began := time.Now()
		tries := int64(0)
		for ; tries < n && time.Since(began) < budget; tries++ {
			res, err := run(a[2], a[3:])
			out := "ok"
			switch {
			case err != nil:
				out = errName(err)
			case res != "":
				out = "ok " + res
			}
			if counts[out] == 0 {
				order = append(order, out)
			}
			counts[out]++
		}
		parts := []string{fmt.Sprintf("tries=%d", tries)}
		for _, o := range order {
			parts = append(parts, fmt.Sprintf("[%s]=%d", o, counts[o]))
		}
		return strings.Join(parts, " "), nil
	case "read", "cat":
		nargs(a, 1)
		b, err := readAll(a[0])
		if err != nil {
			return "", err
		}
		if op == "cat" {
			return strconv.Quote(string(b)), nil
		}
		return strconv.Itoa(len(b)), nil
	case "write", "append":
		nargs(a, 2)
		flags := unix.O_WRONLY | unix.O_TRUNC
		if op == "append" {
			flags = unix.O_WRONLY | unix.O_APPEND
		}
		fd, err := unix.Open(a[0], flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte(a[1]))
		return "", err
	case "create":
		nargs(a, 2)
		fd, err := unix.Open(a[0], unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode(a[1]))
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	case "mkdir":
		nargs(a, 2)
		return "", unix.Mkdir(a[0], mode(a[1]))
	case "mkfifo":
		nargs(a, 2)
		return "", unix.Mkfifo(a[0], mode(a[1]))
	case "mksock":
		nargs(a, 2)
		return "", unix.Mknod(a[0], unix.S_IFSOCK|mode(a[1]), 0)
	case "symlink":
		nargs(a, 2)
		return "", unix.Symlink(a[0], a[1])
	case "link":
		nargs(a, 2)
		return "", unix.Link(a[0], a[1])
	case "unlink":
		nargs(a, 1)
		return "", unix.Unlink(a[0])
	case "rmdir":
		nargs(a, 1)
		return "", unix.Rmdir(a[0])
	case "rename":
		nargs(a, 2)
		return "", unix.Rename(a[0], a[1])
	case "rename-noreplace", "rename-exchange":
		nargs(a, 2)
		fl := uint(unix.RENAME_NOREPLACE)
		if op == "rename-exchange" {
			fl = unix.RENAME_EXCHANGE
		}
		return "", unix.Renameat2(unix.AT_FDCWD, a[0], unix.AT_FDCWD, a[1], fl)
	case "tmpfile":
		// tmpfile DIR MODE DATA NAME: an O_TMPFILE file in DIR, DATA
		// written to it, then linked as NAME ("-": left unnamed).
		nargs(a, 4)
		fd, err := unix.Open(a[0], unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, mode(a[1]))
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, []byte(a[2])); err != nil {
			return "", err
		}
		if a[3] == "-" {
			return "", nil
		}
		return "", unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, a[3], unix.AT_SYMLINK_FOLLOW)
	case "chmod":
		nargs(a, 2)
		return "", unix.Chmod(a[0], mode(a[1]))
	case "chown":
		nargs(a, 3)
		return "", unix.Lchown(a[0], int(num(a[1])), int(num(a[2])))
	case "truncate":
		nargs(a, 2)
		return "", unix.Truncate(a[0], num(a[1]))
	case "touch":
		nargs(a, 1)
		ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		return "", unix.UtimesNanoAt(unix.AT_FDCWD, a[0], ts, unix.AT_SYMLINK_NOFOLLOW)
	case "touch-at":
		nargs(a, 3)
		t := unix.Timespec{Sec: num(a[1]), Nsec: num(a[2])}
		return "", unix.UtimesNanoAt(unix.AT_FDCWD, a[0], []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW)
	case "setxattr":
		nargs(a, 3)
		return "", unix.Lsetxattr(a[0], a[1], []byte(a[2]), 0)
	case "getxattr":
		nargs(a, 2)
		buf := make([]byte, 4096)
		n, err := unix.Lgetxattr(a[0], a[1], buf)
		if err != nil {
			return "", err
		}
		return strconv.Quote(string(buf[:n])), nil
	case "lstat":
		nargs(a, 1)
		var st unix.Stat_t
		if err := unix.Lstat(a[0], &st); err != nil {
			return "", err
		}
		return fmt.Sprintf("type=%s mode=%04o uid=%d gid=%d nlink=%d size=%d",
			mounttest.TypeName(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Nlink, st.Size), nil
	case "flock", "flock-sh":
		nargs(a, 1)
		fd, err := unix.Open(a[0], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		how := unix.LOCK_EX
		if op == "flock-sh" {
			how = unix.LOCK_SH
		}
		return "", unix.Flock(fd, how|unix.LOCK_NB)
	case "setlk", "getlk", "ofd-setlk":
		nargs(a, 4)
		fd, err := unix.Open(a[0], unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		lk := unix.Flock_t{Type: lockType(a[1]), Whence: io.SeekStart, Start: num(a[2]), Len: num(a[3])}
		switch op {
		case "setlk":
			return "", unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk)
		case "ofd-setlk":
			return "", unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
		}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_GETLK, &lk); err != nil {
			return "", err
		}
		switch lk.Type {
		case unix.F_UNLCK:
			return "unlck", nil
		case unix.F_RDLCK:
			return fmt.Sprintf("r %d %d", lk.Start, lk.Len), nil
		default:
			return fmt.Sprintf("w %d %d", lk.Start, lk.Len), nil
		}
	}
	usage()
	return "", nil
}

// open is open(2), tried again when a signal interrupts it, as os.Open
// does: the Go runtime's own signals (preemption) interrupt an open that
// waits for a scan.
func open(p string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(p, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func readAll(p string) ([]byte, error) {
	fd, err := open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	return io.ReadAll(f)
}
