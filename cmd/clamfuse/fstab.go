package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The fstab form: how mount(8) runs clamfuse. A line in /etc/fstab such as
//
//	/srv/incoming /mnt/incoming fuse.clamfuse config=/etc/clamfuse/incoming.toml,allow_other,_netdev 0 0
//
// reaches clamfuse in one of two ways:
//
//   - mount(8) runs the helper /sbin/mount.fuse.clamfuse, a symlink to
//     clamfuse that the package installs, with the util-linux helper
//     arguments: SOURCE TARGET [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE];
//   - mount.fuse3 (fuse3's generic helper, used where ours is missing) runs
//     "clamfuse SOURCE TARGET -o OPTIONS".
//
// Both are turned into the arguments of "clamfuse mount". Since mount(8)
// waits for its helper to exit, the mount is then served by a child
// process in the background (daemon.go), and `umount TARGET` ends it.

const fstabUsage = `usage (the fstab form, run by mount(8)):
  clamfuse SOURCE MOUNTPOINT [-o OPTION[,OPTION...]] [-s] [-f] [-n] [-v] [-t fuse.clamfuse]
options:
  config=FILE   TOML config file (see clamfuse.toml(5))
  clamd=ADDR    clamd address, overrides clamd.address; repeat for several
  allow_other   let other users use the mount
  ro            mount read-only (rw, the default, keeps mount.read_only from the config)
Generic mount options such as defaults, _netdev, nofail, noauto, user, nosuid
and nodev are accepted and ignored.
`

// mountHelperPrefix starts the names clamfuse is called by as a mount
// helper, /sbin/mount.fuse.clamfuse.
const mountHelperPrefix = "mount."

// isMountHelper reports whether argv0 is the name of a mount helper.
func isMountHelper(argv0 string) bool {
	return strings.HasPrefix(filepath.Base(argv0), mountHelperPrefix)
}

// isFstabForm reports whether args (without the program name) are the
// fstab form: a SOURCE path where a subcommand would be, and a MOUNTPOINT.
// A word that is neither a subcommand nor a path stays an unknown command.
func isFstabForm(args []string) bool {
	if len(args) < 2 || args[0] == "" || strings.HasPrefix(args[0], "-") {
		return false
	}
	if strings.Contains(args[0], "/") {
		return true
	}
	_, err := os.Stat(args[0])
	return err == nil
}

// fstabCmd is the fstab form's command line, parsed.
type fstabCmd struct {
	mountArgs []string // the equivalent "clamfuse mount" arguments
	fake      bool     // -f: check everything, mount nothing
	help      bool
}

// ignoredOptions are generic mount options that mean nothing to clamfuse,
// or ask for what a FUSE mount made by root gets anyway (nosuid, nodev).
// mount(8) and mount.fuse3 drop some of them, not all.
var ignoredOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "owner": true, "group": true, "_netdev": true, "nofail": true,
	"rw":  true, // the default: leaves mount.read_only of the config alone
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "lazytime": true, "nolazytime": true,
	"diratime": true, "nodiratime": true, "sync": true, "async": true, "dirsync": true,
	"silent": true, "loud": true,
	"default_permissions": true, // clamfuse always mounts with it
}

// parseFstabArgs parses the fstab form. Options it does not know are an
// error, unless -s (sloppy) is given.
func parseFstabArgs(args []string) (fstabCmd, error) {
	var (
		c          fstabCmd
		positional []string
		opts       []string
		sloppy     bool
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("option %s needs an argument", a)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "-h" || a == "--help":
			c.help = true
			return c, nil
		case a == "-o":
			v, err := next()
			if err != nil {
				return c, err
			}
			opts = append(opts, strings.Split(v, ",")...)
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-t":
			v, err := next()
			if err != nil {
				return c, err
			}
			if v != "fuse.clamfuse" && v != "clamfuse" {
				return c, fmt.Errorf("filesystem type %q: clamfuse mounts type fuse.clamfuse", v)
			}
		case a == "-N":
			return c, errors.New("-N (mount namespace) is not supported")
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// Combined helper flags such as -nv.
			for _, f := range a[1:] {
				switch f {
				case 'f':
					c.fake = true
				case 's':
					sloppy = true
				case 'n', 'v': // no mtab (there is none), verbose
				default:
					return c, fmt.Errorf("unknown flag -%c", f)
				}
			}
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) != 2 {
		return c, fmt.Errorf("want SOURCE and MOUNTPOINT, got %d arguments", len(positional))
	}

	var flags []string
	for _, o := range opts {
		key, val, hasVal := strings.Cut(o, "=")
		switch {
		case key == "config" && hasVal:
			flags = append(flags, "--config", val)
		case key == "clamd" && hasVal:
			flags = append(flags, "--clamd", val)
		case o == "allow_other":
			flags = append(flags, "--allow-other")
		case o == "ro":
			flags = append(flags, "--read-only")
		case o == "" || ignoredOptions[o]:
		case strings.HasPrefix(key, "x-") || (hasVal && key == "comment"):
			// Userspace annotations (x-systemd.*), normally kept by mount(8).
		case o == "noexec":
			return c, errors.New("mount option noexec is not supported: clamfuse cannot pass it on to the FUSE mount")
		case key == "config" || key == "clamd":
			return c, fmt.Errorf("mount option %s needs a value (%s=...)", key, key)
		case sloppy:
		default:
			return c, fmt.Errorf("unknown mount option %q (known: config=FILE, clamd=ADDR, allow_other, ro)", o)
		}
	}
	c.mountArgs = append(flags, "--", positional[0], positional[1])
	return c, nil
}

// defaultPath is the PATH of the fstab form when mount(8) gives none: it
// runs its helpers without one, and the mount needs fusermount3.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// runFstab runs the fstab form and returns the exit code.
func runFstab(args []string, stdout, stderr io.Writer) int {
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPath)
	}
	c, err := parseFstabArgs(args)
	if err != nil {
		return exitCode(usageError{err}, stderr)
	}
	switch {
	case c.help:
		fmt.Fprint(stdout, fstabUsage)
		return exitOK
	case c.fake:
		// mount -f: check the options and the config, mount nothing.
		_, err := parseMountFlags(c.mountArgs, stderr)
		return exitCode(err, stderr)
	case isDetachedChild():
		return serveDetached(c.mountArgs)
	default:
		return detach(args, stderr)
	}
}
