//go:build !linux

package etcdtest

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; t.Cleanup still
// kills every member.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// waitStopped cannot see thread states outside Linux; Pause returns once
// the signal is sent.
func waitStopped(int) error { return nil }
