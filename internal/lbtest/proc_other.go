//go:build !linux

package lbtest

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; t.Cleanup still
// stops nginx.
func sysProcAttr() *syscall.SysProcAttr { return nil }
