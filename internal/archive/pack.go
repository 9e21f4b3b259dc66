package archive

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Pack writes the directory dir as a canonical .tar.gz (see Tree.WriteTo),
// the way `velo deploy` uploads it. See FromDir for what is left out and
// what keep means.
func Pack(w io.Writer, dir string, keep ...string) error {
	t, err := FromDir(dir, Limits{}, keep...)
	if err != nil {
		return err
	}
	_, err = t.WriteTo(w)
	return err
}

// FromDir reads the directory dir into a Tree, leaving out .git and .velo
// (at any depth) and what the ignore file at the root excludes: .veloignore
// if there is one, else .gitignore (see the ignore rules on Ignore). A
// symlink is kept as a link if it resolves inside the tree; one that does
// not, or any other special file, is an error naming it. The contents are
// held to lim's Unpacked and Files caps, so an oversized directory fails
// here and not after an upload.
//
// keep names files (slash-separated, relative to dir) packed even when the
// ignore file excludes them or a directory they are in: a component's
// build output, such as its .wasm module, is usually ignored by git but is
// exactly what has to be uploaded.
func FromDir(dir string, lim Limits, keep ...string) (*Tree, error) {
	lim = lim.withDefaults()
	ign, err := loadIgnore(dir)
	if err != nil {
		return nil, err
	}
	root := dir
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		root = real // WalkDir does not descend into a root that is a symlink
	}
	kept := newKeepSet(keep)
	ignored := map[string]bool{} // ignored dirs walked only for kept files
	t := newTree()
	entries := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if skipped(d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if ignored[path.Dir(rel)] || ign.Match(rel, d.IsDir()) {
			switch {
			case kept.file(rel) && !d.IsDir():
			case kept.under(rel) && d.IsDir():
				ignored[rel] = true // walk it for kept files only
				return nil
			case d.IsDir():
				return filepath.SkipDir
			default:
				return nil
			}
		}
		if entries++; entries > lim.Files {
			return fmt.Errorf("more than %d files", lim.Files)
		}
		name, err := cleanName(rel)
		if err != nil {
			return err
		}
		switch typ := d.Type(); {
		case typ.IsDir():
			if ignored[rel] {
				return nil
			}
			return t.add(rel, name, &node{kind: kindDir, explicit: true})
		case typ&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := checkTarget(rel, filepath.ToSlash(target)); err != nil {
				return err
			}
			return t.add(rel, name, &node{kind: kindSymlink, target: filepath.ToSlash(target)})
		case typ.IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if fi.Size() > lim.Unpacked-t.size {
				return fmt.Errorf("contents exceed %s", formatSize(lim.Unpacked))
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if int64(len(data)) > lim.Unpacked-t.size {
				return fmt.Errorf("contents exceed %s", formatSize(lim.Unpacked))
			}
			t.size += int64(len(data))
			return t.add(rel, name, &node{kind: kindFile, data: data, exec: fi.Mode()&0o111 != 0})
		default:
			return fmt.Errorf("%s: cannot pack a %s; only regular files, directories and symlinks", rel, kindOf(typ))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := t.finish(); err != nil {
		return nil, fmt.Errorf("pack %s: %w", dir, err)
	}
	return t, nil
}

// keepSet holds the files FromDir packs whatever the ignore rules say.
type keepSet map[string]bool

func newKeepSet(paths []string) keepSet {
	k := keepSet{}
	for _, p := range paths {
		if p = path.Clean(filepath.ToSlash(p)); p != "." && !strings.HasPrefix(p, "../") {
			k[strings.TrimPrefix(p, "./")] = true
		}
	}
	return k
}

func (k keepSet) file(rel string) bool { return k[rel] }

// under reports whether a kept file lies below directory rel.
func (k keepSet) under(rel string) bool {
	for p := range k {
		if strings.HasPrefix(p, rel+"/") {
			return true
		}
	}
	return false
}

// loadIgnore reads the ignore rules at the root of dir.
func loadIgnore(dir string) (*Ignore, error) {
	for _, name := range []string{".veloignore", ".gitignore"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pack %s: %w", dir, err)
		}
		return ParseIgnore(data), nil
	}
	return &Ignore{}, nil
}

// skipped reports the names Pack never packs, at any depth: version control
// and Velo's own data.
func skipped(name string) bool { return name == ".git" || name == ".velo" }

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}
