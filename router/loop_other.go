//go:build !linux

package router

import (
	"crypto/tls"
	"errors"
	"net"
)

// Event loops are Linux only: elsewhere every connection is served on a
// goroutine of its own.

type loop struct{}

func (s *FastServer) startLoops() bool                   { return false }
func (s *FastServer) dispatch(net.Conn) bool             { return false }
func (s *FastServer) dispatchTLS(*tls.Conn, *tlsIO) bool { return false }
func (s *FastServer) stopLoops(bool)                     {}
func (t *tlsIO) recv([]byte) (int, error)                { return 0, errors.New("no event loops here") }
