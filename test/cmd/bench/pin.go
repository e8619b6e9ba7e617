package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// pinEnv makes the bench binary a pinner (see pinFiles) instead.
const pinEnv = "CLAMFUSE_BENCH_PIN"

// pinPerProcess is how many files one pinner holds: RLIMIT_NOFILE may be
// as low as 20 000 and root not allowed to raise it.
const pinPerProcess = 15000

// pinners hold O_PATH descriptors of files of a FUSE mount.
type pinners []*exec.Cmd

// pinFiles makes the kernel hold the inodes of files (under root) until
// release, whatever drop_caches other processes run meanwhile: the
// resident memory figure is of a clamfuse whose nodes the kernel keeps,
// and on a shared machine another bench's or test's drop_caches made the
// kernel forget some, and clamfuse its nodes, halfway through. An O_PATH
// open is a LOOKUP and no OPEN: clamfuse keeps no handle for it. The
// descriptors are held by child processes, pinPerProcess each.
func pinFiles(root string, files []string) (pinners, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var ps pinners
	for i := 0; i < len(files); i += pinPerProcess {
		part := files[i:min(i+pinPerProcess, len(files))]
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), pinEnv+"=1")
		var in strings.Builder
		for _, f := range part {
			in.WriteString(filepath.Join(root, f) + "\n")
		}
		cmd.Stdin = strings.NewReader(in.String())
		out, err := cmd.StdoutPipe()
		if err != nil {
			ps.release()
			return nil, err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			ps.release()
			return nil, err
		}
		ps = append(ps, cmd)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "pinned" {
			ps.release()
			return nil, fmt.Errorf("pinning files: %q %v", line, err)
		}
	}
	return ps, nil
}

// release closes the descriptors: the kernel may then forget the inodes.
func (ps pinners) release() {
	for _, c := range ps {
		c.Process.Kill()
		c.Wait()
	}
}

// pinMain is the pinner: it opens O_PATH each path read from stdin, says
// "pinned", and holds the descriptors until killed.
func pinMain() int {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pin:", err)
		return 1
	}
	var fds []int
	for _, p := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pin:", err)
			return 1
		}
		fds = append(fds, fd)
	}
	fmt.Println("pinned")
	select {} // until killed; fds stay open
}
