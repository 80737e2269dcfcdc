package etcdtest

import "syscall"

// sysProcAttr makes the kernel kill an etcd member when the test binary
// dies without running its cleanups (a panic, a -timeout), so no member
// outlives the test that started it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
