package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/velo-run/velo/internal/archive"
)

// The WAGI keys of velo.toml: what deislabs/wagi's modules.toml says per
// module beyond the module itself. Kept in one place so that Parse,
// Validate and Load each make one call for them.
//
//	entrypoint = "serve"                       # the export to run instead of _start
//	files = ["static/**", "templates/*.html",  # globs: each file at /its/path
//	         { source = "assets", destination = "/assets" }]
//	volumes = { "/data" = "data" }             # WAGI's spelling of the table form
var wagiKeys = []string{"entrypoint", "files", "volumes"}

// MaxFiles bounds how many files `files` may mount; it is the archive's
// entry cap, which no component can exceed anyway.
const MaxFiles = 10_000

// maxEntrypoint bounds an entrypoint's length; WebAssembly allows longer
// export names, no module needs one.
const maxEntrypoint = 256

// FileMount is one entry of `files`. Either Pattern is set (a glob relative
// to the component root; each file it matches appears to the module at its
// own path under "/"), or Source and Destination are (a file or directory
// relative to the component root, and the absolute path where it, or its
// contents, appear).
type FileMount struct {
	Pattern     string `json:"pattern,omitempty"`
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
}

// MountedFile is one file a module sees: Path in the component's tree
// (slash-separated, relative), Guest the absolute path the module opens.
type MountedFile struct {
	Path  string
	Guest string
}

// parseWAGI reads the WAGI keys into m.
func parseWAGI(raw map[string]any, m *Manifest) error {
	if v, ok := raw["entrypoint"]; ok {
		s, err := str("entrypoint", v)
		if err != nil {
			return err
		}
		if err := checkEntrypoint(s); err != nil {
			return err
		}
		m.Entrypoint = s
	}
	if v, ok := raw["files"]; ok {
		list, ok := v.([]any)
		if !ok {
			if _, table := v.([]map[string]any); table {
				// [[files]] tables: an array of tables.
				for _, t := range v.([]map[string]any) {
					list = append(list, t)
				}
			} else {
				return keyErr("files", `must be an array of globs and { source, destination } tables, not %s`, typeName(v))
			}
		}
		for i, e := range list {
			fm, err := parseFileMount(fmt.Sprintf("files[%d]", i), e)
			if err != nil {
				return err
			}
			m.Files = append(m.Files, fm)
		}
	}
	if v, ok := raw["volumes"]; ok {
		t, ok := v.(map[string]any)
		if !ok {
			return keyErr("volumes", `must be a table of "/guest/path" = "directory" (or use files), not %s`, typeName(v))
		}
		for _, guest := range sortedKeys(t) {
			src, ok := t[guest].(string)
			if !ok {
				return keyErr("volumes", "%q must map to a directory of the component as a string, not %s", guest, typeName(t[guest]))
			}
			fm := FileMount{Source: src, Destination: guest}
			if err := fm.check("volumes"); err != nil {
				return err
			}
			m.Files = append(m.Files, fm)
		}
	}
	return nil
}

func parseFileMount(key string, v any) (FileMount, error) {
	var fm FileMount
	switch v := v.(type) {
	case string:
		fm.Pattern = v
	case map[string]any:
		for _, k := range sortedKeys(v) {
			s, ok := v[k].(string)
			switch {
			case k != "source" && k != "destination":
				return FileMount{}, keyErr(key, "unknown key %q (a table has source and destination)", k)
			case !ok:
				return FileMount{}, keyErr(key+"."+k, "must be a string, not %s", typeName(v[k]))
			case k == "source":
				fm.Source = s
			default:
				fm.Destination = s
			}
		}
		if fm.Source == "" || fm.Destination == "" {
			return FileMount{}, keyErr(key, "a table needs both source and destination")
		}
	default:
		return FileMount{}, keyErr(key, "must be a glob string or a { source, destination } table, not %s", typeName(v))
	}
	return fm, fm.check(key)
}

// check reports what is wrong with fm, naming key.
func (fm FileMount) check(key string) error {
	if fm.Pattern != "" {
		if fm.Source != "" || fm.Destination != "" {
			return keyErr(key, "has both a glob and a source")
		}
		if err := checkTreePath(fm.Pattern); err != nil {
			return keyErr(key, "glob %q %v", fm.Pattern, err)
		}
		for elem := range strings.SplitSeq(fm.Pattern, "/") {
			if _, err := path.Match(elem, ""); err != nil {
				return keyErr(key, "glob %q: malformed element %q", fm.Pattern, elem)
			}
		}
		return nil
	}
	if fm.Source == "" {
		return keyErr(key, "names no glob and no source")
	}
	if err := checkTreePath(fm.Source); err != nil {
		return keyErr(key, "source %q %v", fm.Source, err)
	}
	if strings.ContainsAny(fm.Source, "*?[") {
		return keyErr(key, "source %q is a glob; a table's source is a file or directory (write globs as plain strings)", fm.Source)
	}
	d := fm.Destination
	if !strings.HasPrefix(d, "/") || path.Clean(d) != d || strings.ContainsAny(d, "\\\x00") {
		return keyErr(key, "destination %q must be a clean absolute path such as \"/assets\"", d)
	}
	return nil
}

// checkTreePath reports why p cannot name something inside a component.
func checkTreePath(p string) error {
	clean := path.Clean(p)
	if strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") || clean == ".." || strings.HasPrefix(clean, "../") {
		return errors.New("must be a path relative to the component's root, inside it")
	}
	return nil
}

func checkEntrypoint(s string) error {
	if s == "" || len(s) > maxEntrypoint {
		return keyErr("entrypoint", "must be the name of an exported function (1 to %d bytes)", maxEntrypoint)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return keyErr("entrypoint", "%q holds a blank or control character; name an exported function", s)
		}
	}
	return nil
}

// validateWAGI checks the WAGI keys of a resolved manifest.
func (m Manifest) validateWAGI() error {
	if m.Runtime != WASM {
		if m.Entrypoint != "" {
			return keyErr("entrypoint", "only a wasm component has one")
		}
		if len(m.Files) > 0 {
			return keyErr("files", "only a wasm component mounts files (a Dockerfile COPYs what it needs)")
		}
		return nil
	}
	if m.Entrypoint != "" {
		if err := checkEntrypoint(m.Entrypoint); err != nil {
			return err
		}
	}
	for i, fm := range m.Files {
		if err := fm.check(fmt.Sprintf("files[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

// ResolveFiles lists the files mounts make visible in fsys, sorted by guest
// path, each once. Only regular files (or symlinks to them) are mounted;
// .git and .velo, which are never packed, are never matched. A glob that
// matches nothing, a source that does not exist, two different files at
// one guest path, or a file where another mount needs a directory is an
// error naming the entry.
func ResolveFiles(fsys fs.FS, mounts []FileMount) ([]MountedFile, error) {
	byGuest := map[string]string{}
	add := func(key, p, guest string) error {
		if guest == "/" {
			return keyErr(key, "%s is a file; it cannot be mounted at / (give a destination such as /%s)", p, path.Base(p))
		}
		if prev, ok := byGuest[guest]; ok && prev != p {
			return keyErr(key, "%s and %s would both be %s", prev, p, guest)
		}
		if len(byGuest) >= MaxFiles {
			return keyErr(key, "more than %d files", MaxFiles)
		}
		byGuest[guest] = p
		return nil
	}
	for i, fm := range mounts {
		key := fmt.Sprintf("files[%d]", i)
		var err error
		if fm.Pattern != "" {
			matched := false
			err = walkFiles(fsys, globBase(fm.Pattern), func(p string) error {
				if !archive.MatchGlob(path.Clean(fm.Pattern), p) {
					return nil
				}
				matched = true
				return add(key, p, "/"+p)
			})
			if err == nil && !matched {
				return nil, keyErr(key, "glob %q matches no file in the component", fm.Pattern)
			}
		} else {
			src := path.Clean(fm.Source)
			var info fs.FileInfo
			info, err = fs.Stat(fsys, src)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return nil, keyErr(key, "source %q is not in the component", fm.Source)
			case err != nil:
				return nil, keyErr(key, "source %q: %v", fm.Source, err)
			case info.Mode().IsRegular():
				err = add(key, src, fm.Destination)
			case info.IsDir():
				err = walkFiles(fsys, src, func(p string) error {
					rel := strings.TrimPrefix(p, src+"/")
					if src == "." {
						rel = p
					}
					return add(key, p, path.Join(fm.Destination, rel))
				})
			default:
				return nil, keyErr(key, "source %q is neither a file nor a directory", fm.Source)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	files := make([]MountedFile, 0, len(byGuest))
	for _, g := range sortedKeys(byGuest) {
		files = append(files, MountedFile{Path: byGuest[g], Guest: g})
	}
	// A guest path that is a file cannot also be a directory of others.
	for _, f := range files {
		for dir := path.Dir(f.Guest); dir != "/"; dir = path.Dir(dir) {
			if p, ok := byGuest[dir]; ok {
				return nil, keyErr("files", "%s is a file (%s), so %s (%s) cannot be inside it", dir, p, f.Guest, f.Path)
			}
		}
	}
	return files, nil
}

// globBase is the directory a glob's matches all lie in: its leading
// elements without wildcards.
func globBase(pattern string) string {
	elems := strings.Split(path.Clean(pattern), "/")
	i := 0
	for i < len(elems)-1 && !strings.ContainsAny(elems[i], "*?[") {
		i++
	}
	if i == 0 {
		return "."
	}
	return path.Join(elems[:i]...)
}

// walkFiles calls fn for every regular file (or symlink to one) under dir,
// skipping .git and .velo. A dir that does not exist has no files.
func walkFiles(fsys fs.FS, dir string, fn func(p string) error) error {
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if p != "." && (d.Name() == ".git" || d.Name() == ".velo") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		switch {
		case d.Type().IsRegular():
			return fn(p)
		case d.Type()&fs.ModeSymlink != 0:
			if info, err := fs.Stat(fsys, p); err == nil && info.Mode().IsRegular() {
				return fn(p)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: files: %w", FileName, err)
	}
	return nil
}

// knownWAGIKey reports whether k is one of the WAGI keys.
func knownWAGIKey(k string) bool { return slices.Contains(wagiKeys, k) }
