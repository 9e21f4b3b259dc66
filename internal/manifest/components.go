package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"

	"github.com/BurntSushi/toml"
)

// Components is what a velo.toml at a repository's root says when it
// lists the repository's components instead of describing one:
//
//	components = ["services/*"]   # globs of directories
//	[[component]]
//	path = "web"                  # one directory
//
// Each listed directory is a component with its own velo.toml (or none:
// its runtime is inferred as usual), named by it, else after the
// directory.
type Components struct {
	Paths []string
	Globs []string
}

// ParseComponents reads velo.toml data and reports whether it lists
// components (ok), and which. A file that lists components holds nothing
// else; every error names the key.
func ParseComponents(data []byte) (c Components, ok bool, err error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Components{}, false, fmt.Errorf("%s: line %d: %s", FileName, pe.Position.Line, pe.Message)
		}
		return Components{}, false, fmt.Errorf("%s: %w", FileName, err)
	}
	_, hasList := raw["components"]
	_, hasTables := raw["component"]
	if !hasList && !hasTables {
		return Components{}, false, nil
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k != "components" && k != "component" {
			return Components{}, false, keyErr(k, "a %s that lists components describes none itself; put %s in a component's own %s", FileName, k, FileName)
		}
	}
	if v, ok := raw["components"]; ok {
		list, isList := v.([]any)
		if !isList {
			return Components{}, false, keyErr("components", "want a list of directory globs, like [\"services/*\"]")
		}
		for i, e := range list {
			s, isStr := e.(string)
			if !isStr {
				return Components{}, false, keyErr(fmt.Sprintf("components[%d]", i), "want a string")
			}
			if err := checkDir(s); err != nil {
				return Components{}, false, keyErr(fmt.Sprintf("components[%d]", i), "%v", err)
			}
			if _, err := path.Match(s, ""); err != nil {
				return Components{}, false, keyErr(fmt.Sprintf("components[%d]", i), "%q is not a glob: %v", s, err)
			}
			c.Globs = append(c.Globs, path.Clean(s))
		}
	}
	if v, ok := raw["component"]; ok {
		tables, isTables := v.([]map[string]any)
		if !isTables {
			return Components{}, false, keyErr("component", "want [[component]] tables, each with a path")
		}
		for i, t := range tables {
			for k := range t {
				if k != "path" {
					return Components{}, false, unknownKey(toml.Key{"component", k})
				}
			}
			s, isStr := t["path"].(string)
			key := fmt.Sprintf("component[%d].path", i)
			if !isStr {
				return Components{}, false, keyErr(key, "want the component's directory, like \"services/api\"")
			}
			if err := checkDir(s); err != nil {
				return Components{}, false, keyErr(key, "%v", err)
			}
			c.Paths = append(c.Paths, path.Clean(s))
		}
	}
	if len(c.Paths)+len(c.Globs) == 0 {
		return Components{}, false, keyErr("components", "lists no component")
	}
	return c, true, nil
}

// checkDir accepts a relative path inside the repository, not its root.
func checkDir(p string) error {
	c := path.Clean(p)
	if p == "" || c == "." || !fs.ValidPath(c) {
		return fmt.Errorf("%q is not a directory inside the repository (relative, no '..')", p)
	}
	return nil
}

// Dirs resolves c against fsys: the listed directories and those the
// globs match, deduplicated and sorted. A path that is not a directory, or
// a glob that matches none, is an error.
func (c Components) Dirs(fsys fs.FS) ([]string, error) {
	seen := map[string]bool{}
	for _, p := range c.Paths {
		fi, err := fs.Stat(fsys, p)
		if err != nil || !fi.IsDir() {
			return nil, keyErr("component.path", "%q is not a directory of the repository", p)
		}
		seen[p] = true
	}
	for _, g := range c.Globs {
		ms, err := fs.Glob(fsys, g)
		if err != nil {
			return nil, keyErr("components", "%q: %v", g, err)
		}
		n := 0
		for _, m := range ms {
			if fi, err := fs.Stat(fsys, m); err == nil && fi.IsDir() {
				seen[m] = true
				n++
			}
		}
		if n == 0 {
			return nil, keyErr("components", "%q matches no directory", g)
		}
	}
	dirs := make([]string, 0, len(seen))
	for d := range seen {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	return dirs, nil
}

// ComponentDirs reads fsys's velo.toml and, when it lists components,
// returns their directories (ok true). ok is false when there is no
// velo.toml or it describes a single component.
func ComponentDirs(fsys fs.FS) (dirs []string, ok bool, err error) {
	data, err := fs.ReadFile(fsys, FileName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", FileName, err)
	}
	c, ok, err := ParseComponents(data)
	if err != nil || !ok {
		return nil, false, err
	}
	dirs, err = c.Dirs(fsys)
	if err != nil {
		return nil, false, err
	}
	return dirs, true, nil
}
