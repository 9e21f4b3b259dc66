//go:build linux || darwin

package archive

import (
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestPackRefusesFifo(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, map[string]string{"a": "x"})
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	err := Pack(io.Discard, dir)
	if err == nil || !strings.Contains(err.Error(), "pipe: cannot pack a named pipe; only regular files, directories and symlinks") {
		t.Fatalf("Pack with a fifo = %v", err)
	}
	if err := Pack(io.Discard, filepath.Join(dir, "missing")); err == nil {
		t.Fatal("Pack of a missing directory succeeded")
	}
}
