package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The launcher of the on_infected command. clamfuse serves with umask 0
// (fs.Mount: what callers create gets exactly their mode), which a
// command it starts would inherit, and then create world-writable files.
// So the command runs through clamfuse itself: the hidden subcommand
//
//	clamfuse exec-with-umask MASK -- COMMAND ARGS...
//
// sets the umask clamfuse started with, then executes COMMAND in its
// place (same process, same process group, same environment).

const launcherCmd = "exec-with-umask"

// startUmask is the umask clamfuse started with, read before anything
// (fs.Mount) changes it.
var startUmask = currentUmask()

func currentUmask() int {
	m := unix.Umask(0o022)
	unix.Umask(m)
	return m
}

// launcher is the argv put before the on_infected command. /proc/self/exe
// is, in the child, the running clamfuse binary, even if the file has
// been replaced since (an upgrade).
func launcher() []string {
	return []string{"/proc/self/exe", launcherCmd, fmt.Sprintf("%04o", startUmask), "--"}
}

// runLauncher is the exec-with-umask subcommand; it returns only on error.
func runLauncher(args []string, stderr io.Writer) int {
	if len(args) < 3 || args[1] != "--" {
		fmt.Fprintf(stderr, "usage: clamfuse %s MASK -- COMMAND [ARGS...]\n", launcherCmd)
		return exitUsage
	}
	mask, err := strconv.ParseUint(args[0], 8, 32)
	if err != nil || mask > 0o777 {
		fmt.Fprintf(stderr, "clamfuse %s: bad umask %q\n", launcherCmd, args[0])
		return exitUsage
	}
	unix.Umask(int(mask))
	err = syscall.Exec(args[2], args[2:], os.Environ())
	fmt.Fprintf(stderr, "clamfuse %s: %s: %v\n", launcherCmd, args[2], err)
	return exitFailure
}
