package main

import "syscall"

// dieWithParent makes a started server die with nefia-bench, so an
// interrupted run leaves no stunnel or nginx listening behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
