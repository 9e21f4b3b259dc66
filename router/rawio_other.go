//go:build !linux

package router

import "syscall"

// Elsewhere rawIO uses the connection's own Read and Write.
const rawSockets = false

func rawRecv(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.EINVAL }
func rawSend(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.EINVAL }
