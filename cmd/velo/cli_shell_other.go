//go:build !unix

package main

import "github.com/velo-run/velo/internal/shell"

// watchSize reports no resizes where there is no SIGWINCH.
func watchSize(int) (<-chan shell.Size, func()) { return nil, func() {} }
