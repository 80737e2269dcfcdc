//go:build unix

package etcdtest

import "syscall"

// sigStop and sigCont pause and resume a member (Cluster.Pause, Resume).
const (
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)
