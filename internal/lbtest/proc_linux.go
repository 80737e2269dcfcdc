package lbtest

import "syscall"

// sysProcAttr makes the kernel kill nginx when the test binary dies
// without running its cleanups (a panic, a -timeout), so nginx does not
// outlive the test that started it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
