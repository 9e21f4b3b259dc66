package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Postgres holds the Postgres migrations under "postgres/".
//
//go:embed postgres/*.sql
var Postgres embed.FS

// SQLite holds the SQLite migrations under "sqlite/".
//
//go:embed sqlite/*.sql
var SQLite embed.FS

// Migration is one schema change.
type Migration struct {
	Version int    // from the NNNN prefix of the file name
	Name    string // the file name without the prefix and ".sql"
	SQL     string
}

// For returns the migrations of an engine ("postgres" or "sqlite") in
// version order.
func For(engine string) ([]Migration, error) {
	switch engine {
	case "postgres":
		return Load(Postgres, "postgres")
	case "sqlite":
		return Load(SQLite, "sqlite")
	}
	return nil, fmt.Errorf("migrations: unknown engine %q", engine)
}

// Load reads the NNNN_name.sql files of dir in fsys, sorted by version. It
// rejects badly named files and duplicate versions.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations %s: %w", dir, err)
	}
	var out []Migration
	seen := make(map[int]string)
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		m, err := parseName(e.Name())
		if err != nil {
			return nil, err
		}
		if prev, ok := seen[m.Version]; ok {
			return nil, fmt.Errorf("migration %s: version %d already used by %s", e.Name(), m.Version, prev)
		}
		seen[m.Version] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		m.SQL = string(b)
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// parseName splits "0001_init.sql" into version 1 and name "init".
func parseName(file string) (Migration, error) {
	base := strings.TrimSuffix(file, ".sql")
	num, name, ok := strings.Cut(base, "_")
	if !ok || len(num) != 4 || name == "" {
		return Migration{}, fmt.Errorf("migration %s: want NNNN_name.sql", file)
	}
	v, err := strconv.Atoi(num)
	if err != nil || v <= 0 {
		return Migration{}, fmt.Errorf("migration %s: bad version %q", file, num)
	}
	return Migration{Version: v, Name: name}, nil
}
