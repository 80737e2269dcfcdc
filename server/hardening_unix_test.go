//go:build unix

package server_test

import "syscall"

// setReceiveBuffer sets SO_RCVBUF on a socket before it connects, which
// also turns off the kernel's autotuning of it: a client with a small
// receive buffer makes the gateway's writes block after a few MiB (what the
// gateway's own send buffer holds), not after the tens of MiB loopback
// autotuning would soak up.
func setReceiveBuffer(fd uintptr, n int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
}
