package main

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// hold opens PATH up to COUNT times and keeps every descriptor it got
// open until its standard input reaches EOF; then it closes them and
// exits. It prints one line as soon as it has stopped opening: "held N"
// when all COUNT opens succeeded, "held N ERRNO" when open number N+1
// failed. holddir opens PATH as a directory and reads BUFSIZE bytes of
// entries (one getdents call) from each descriptor before the next open.
func hold(op string, a []string) {
	dir := op == "holddir"
	if (dir && len(a) != 3) || (!dir && len(a) != 2) {
		usage()
	}
	count, err := strconv.Atoi(a[1])
	if err != nil || count < 0 {
		usage()
	}
	var buf []byte
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	if dir {
		size, err := strconv.Atoi(a[2])
		if err != nil || size < 1 {
			usage()
		}
		buf = make([]byte, size)
		flags |= unix.O_DIRECTORY
	}
	var fds []int
	var failed error
	for len(fds) < count {
		fd, err := unix.Open(a[0], flags, 0)
		if err != nil {
			failed = err
			break
		}
		fds = append(fds, fd)
		if dir {
			if _, err := unix.Getdents(fd, buf); err != nil {
				failed = err
				break
			}
		}
	}
	if failed != nil {
		fmt.Printf("held %d %s\n", len(fds), errName(failed))
	} else {
		fmt.Printf("held %d\n", len(fds))
	}
	io.Copy(io.Discard, os.Stdin)
	for _, fd := range fds {
		unix.Close(fd)
	}
}
