//go:build linux

package router

import (
	"syscall"
	"unsafe"
)

// rawRecv and rawSend receive or send p on fd (recvfrom and sendto, which
// skip the file layer that read and write go through) without telling the
// scheduler: the socket is non-blocking, so the call cannot park the
// thread. A send to a closed connection fails with EPIPE, not a signal.
func rawRecv(fd uintptr, p []byte) (int, syscall.Errno) {
	return rawRW(syscall.SYS_RECVFROM, fd, p, 0)
}

func rawSend(fd uintptr, p []byte) (int, syscall.Errno) {
	return rawRW(syscall.SYS_SENDTO, fd, p, syscall.MSG_NOSIGNAL)
}

func rawRW(trap, fd uintptr, p []byte, flags uintptr) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	r, _, errno := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), flags, 0, 0)
	return int(r), errno
}
