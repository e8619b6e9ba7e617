// Command clamfuse mounts a directory through a filesystem that scans every
// file with clamd before it is first read.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `usage:
  clamfuse mount [--config FILE] [flags] [SOURCE MOUNTPOINT]
  clamfuse check-config --config FILE
  clamfuse scan [--config FILE] [--clamd ADDR] PATH...
  clamfuse version
  clamfuse SOURCE MOUNTPOINT [-o OPTIONS]   (the fstab form, run by mount(8))
Run "clamfuse mount -h" for the mount flags.
`

func main() {
	if isMountHelper(os.Args[0]) { // /sbin/mount.fuse.clamfuse
		os.Exit(runFstab(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is bad input on the command line or in the config.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case launcherCmd:
		return runLauncher(args[1:], stderr)
	case "mount":
		err = cmdMount(args[1:], stderr)
	case "check-config":
		err = cmdCheckConfig(args[1:], stdout, stderr)
	case "scan":
		err = cmdScan(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		if isFstabForm(args) {
			return runFstab(args, stdout, stderr)
		}
		fmt.Fprintf(stderr, "clamfuse: unknown command %q\n%s", args[0], usage)
		return exitUsage
	}
	return exitCode(err, stderr)
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "clamfuse: %v\n", err)
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitFailure
}
