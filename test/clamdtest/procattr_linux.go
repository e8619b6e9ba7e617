package clamdtest

import "syscall"

// sysProcAttr puts clamd in its own process group, so a terminal's Ctrl-C
// reaches only the parent (which then stops clamd), and has the kernel send
// it SIGTERM when the thread that started it exits.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
