package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// Dockerfile is the file at the root of a component that makes it a docker
// component.
const Dockerfile = "Dockerfile"

// Load resolves a component's manifest from its tree: it parses velo.toml at
// the root of fsys when there is one (a component without one is fine),
// applies the defaults, names the component defaultName when the file does
// not (made into a valid name if it can be), infers the runtime from the
// files when the manifest does not say, and checks that what the manifest
// names exists: the module of a wasm component, the Dockerfile of a docker
// one. The result passes Validate.
func Load(fsys fs.FS, defaultName string) (Manifest, error) {
	var m Manifest
	data, err := fs.ReadFile(fsys, FileName)
	switch {
	case err == nil:
		if m, err = Parse(data); err != nil {
			return Manifest{}, err
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return Manifest{}, fmt.Errorf("read %s: %w", FileName, err)
	}

	if m.Name == "" {
		if m.Name, err = defaultNameFor(defaultName); err != nil {
			return Manifest{}, err
		}
	}
	if err := resolveRuntime(fsys, &m); err != nil {
		return Manifest{}, err
	}
	applyDefaults(&m)
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	if len(m.Files) > 0 {
		if _, err := ResolveFiles(fsys, m.Files); err != nil {
			return Manifest{}, err
		}
	}
	if m.OpenAPI != "" {
		info, err := fs.Stat(fsys, m.OpenAPI)
		switch {
		case err != nil:
			return Manifest{}, keyErr("openapi", "%q is not in the component", m.OpenAPI)
		case !info.Mode().IsRegular():
			return Manifest{}, keyErr("openapi", "%q is not a regular file", m.OpenAPI)
		case info.Size() > MaxOpenAPI:
			return Manifest{}, keyErr("openapi", "%q is larger than %d bytes", m.OpenAPI, MaxOpenAPI)
		}
	}
	return m, nil
}

// applyDefaults fills in every value velo.toml left out. Parse rejects
// explicit zeros, so zero means absent.
func applyDefaults(m *Manifest) {
	if m.Timeout == 0 {
		m.Timeout = DefaultTimeout
	}
	if m.Memory == 0 {
		m.Memory = DefaultMemory
	}
	if m.Concurrency == 0 {
		m.Concurrency = DefaultConcurrency
	}
	if m.Runtime == Docker && m.Port == 0 {
		m.Port = DefaultPort
	}
	if m.Scale.Max == 0 {
		// An explicit min above the default max raises the max with it
		// rather than failing on a value the user never wrote.
		m.Scale.Max = max(DefaultMax, m.Scale.Min)
	}
}

// defaultNameFor returns name if it is a valid component name, else its
// sanitized form, else an error.
func defaultNameFor(name string) (string, error) {
	if ValidName(name) == nil {
		return name, nil
	}
	s := Sanitize(name)
	if err := ValidName(s); err != nil {
		if name == "" {
			return "", keyErr("name", "not set, and there is no default; set name")
		}
		return "", keyErr("name", "not set, and the default %q cannot be made a valid name; set name", name)
	}
	return s, nil
}

// Sanitize turns an arbitrary name (a directory or repository name) into a
// component name where it can: lowercase, every other character replaced by
// '-', runs of '-' collapsed, leading non-letters and trailing '-' trimmed,
// cut to 63 characters. The result may still be invalid (e.g. empty); check
// it with ValidName.
func Sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if !nameChar(r) {
			r = '-'
		}
		if r == '-' && strings.HasSuffix(b.String(), "-") {
			continue
		}
		b.WriteRune(r)
	}
	s := strings.TrimLeftFunc(b.String(), func(r rune) bool { return r < 'a' || r > 'z' })
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.TrimRight(s, "-")
}

// resolveRuntime infers the runtime (and a wasm module) when the manifest
// leaves them out, and checks that the files the manifest relies on exist.
func resolveRuntime(fsys fs.FS, m *Manifest) error {
	if m.Runtime == "" {
		switch {
		case isRegular(fsys, Dockerfile):
			m.Runtime = Docker
		case m.Module != "":
			m.Runtime = WASM
		default:
			mods, err := wasmFiles(fsys)
			if err != nil {
				return err
			}
			if len(mods) == 0 {
				return keyErr("runtime", "not set, and the component has neither a %s at its root nor a .wasm module; add one or set runtime", Dockerfile)
			}
			m.Runtime = WASM
		}
	}

	switch m.Runtime {
	case Docker:
		if !isRegular(fsys, Dockerfile) {
			return keyErr("runtime", "docker needs a %s at the root of the component", Dockerfile)
		}
	case WASM:
		if m.Module == "" {
			mods, err := wasmFiles(fsys)
			if err != nil {
				return err
			}
			switch len(mods) {
			case 0:
				return keyErr("module", "not set, and the component has no .wasm file")
			case 1:
				m.Module = mods[0]
			default:
				shown := mods[:min(len(mods), 5)]
				return keyErr("module", "not set, and the component has %d .wasm files (%s); set module", len(mods), strings.Join(shown, ", "))
			}
		}
		info, err := fs.Stat(fsys, m.Module)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return keyErr("module", "%q is not in the component", m.Module)
		case err != nil:
			return keyErr("module", "%v", err)
		case !info.Mode().IsRegular():
			return keyErr("module", "%q is not a regular file", m.Module)
		}
	}
	return nil
}

func isRegular(fsys fs.FS, name string) bool {
	info, err := fs.Stat(fsys, name)
	return err == nil && info.Mode().IsRegular()
}

// wasmFiles lists the .wasm files in the tree, in lexical order.
func wasmFiles(fsys fs.FS) ([]string, error) {
	var mods []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && path.Ext(p) == ".wasm" {
			mods = append(mods, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look for .wasm files: %w", err)
	}
	return mods, nil
}
