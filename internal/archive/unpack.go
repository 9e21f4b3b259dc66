package archive

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Unpack reads and validates the archive r like Read (without stripping a
// top-level directory) and then writes it into dir, which must not exist
// yet. Nothing is written until the whole archive has been validated; see
// Tree.Extract for how it is written.
func Unpack(r io.Reader, dir string, lim Limits) error {
	if err := absent(dir); err != nil {
		return err
	}
	t, err := Read(r, lim, false)
	if err != nil {
		return err
	}
	return t.Extract(dir)
}

// Extract writes the tree into dir, which must not exist yet, atomically:
// into a temporary directory beside dir, renamed to dir once everything is
// written. On error the temporary directory is removed and dir left as it
// was. Every write goes through an os.Root, files are created with O_EXCL,
// and symlinks are created last, so no write follows a link.
//
// If another process creates dir between the check and the rename, the
// rename fails when dir is not empty, and replaces it when it is.
func (t *Tree) Extract(dir string) (err error) {
	if err := absent(dir); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".unpack-")
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := t.writeInto(tmp); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	if err := absent(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	return nil
}

// writeInto writes the tree into the empty directory dir: directories and
// files first, in path order, so parents exist before their children, then
// the symlinks.
func (t *Tree) writeInto(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var links []string
	for _, p := range t.paths() {
		n := t.nodes[p]
		switch n.kind {
		case kindDir:
			if err := root.Mkdir(p, 0o755); err != nil {
				return err
			}
		case kindFile:
			if err := writeFile(root, p, n.data, info{n}.Mode().Perm()); err != nil {
				return err
			}
		case kindSymlink:
			links = append(links, p)
		}
	}
	for _, p := range links {
		if err := root.Symlink(t.nodes[p].target, p); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(root *os.Root, name string, data []byte, perm fs.FileMode) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// absent returns an error unless nothing exists at dir.
func absent(dir string) error {
	_, err := os.Lstat(dir)
	switch {
	case err == nil:
		return fmt.Errorf("unpack: %s already exists", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("unpack: %w", err)
	}
	return nil
}
