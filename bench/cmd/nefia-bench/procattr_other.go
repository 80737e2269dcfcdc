//go:build !linux

package main

import "syscall"

// dieWithParent has no equivalent of Linux's parent-death signal here; the
// benchmarks are run on Linux (they read /proc), this only keeps the tree
// building everywhere.
func dieWithParent() *syscall.SysProcAttr { return nil }
