//go:build !linux

package clamdtest

import "syscall"

// sysProcAttr puts clamd in its own process group, so a terminal's Ctrl-C
// reaches only the parent, which then stops clamd.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
