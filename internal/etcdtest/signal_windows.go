package etcdtest

import "syscall"

// sigStop and sigCont have no Windows equivalent: os.Process.Signal refuses
// them there, so Pause fails the test. (etcdtest runs etcd on Linux.)
const (
	sigStop = syscall.Signal(0x13)
	sigCont = syscall.Signal(0x12)
)
