package manifest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/velo-run/velo/internal/archive"
)

// TestLoadFromArchive loads a manifest from an archive.Tree, the fs.FS the
// platform actually hands Load, with the module reached through a symlink.
func TestLoadFromArchive(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"velo.toml":         "module = \"app.wasm\"\n[env]\nPORT = \"8080\"\n",
		"build/app-v2.wasm": "\x00asm",
		"README.md":         "hi",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("build/app-v2.wasm", filepath.Join(dir, "app.wasm")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.Pack(&buf, dir); err != nil {
		t.Fatal(err)
	}
	tree, err := archive.Read(&buf, archive.Limits{}, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(tree, "My App")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if m.Name != "my-app" || m.Runtime != WASM || m.Module != "app.wasm" || m.Env["PORT"] != "8080" {
		t.Errorf("Load = %+v", m)
	}
}
