//go:build !linux

package router

import "net"

// Event loops are Linux only: elsewhere every connection is served on a
// goroutine of its own.

type loop struct{}

func (s *FastServer) startLoops() bool       { return false }
func (s *FastServer) dispatch(net.Conn) bool { return false }
func (s *FastServer) stopLoops(bool)         {}
