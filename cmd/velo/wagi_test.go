package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWAGIEndToEnd deploys WAGI components that use sub-routes, an
// entrypoint and files with `velo deploy` into an in-process Velo and calls
// them through the router: the manifest is checked at intake, the files
// travel in the artifact, the worker mounts them, and a bad _routes fails
// the deployment with its reason.
func TestWAGIEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()

	site := wagiComponent(t, "fileserver.wasm", `name = "site"
module = "fileserver.wasm"
files = ["static/**", { source = "gen", destination = "/data" }]
`, map[string]string{
		".gitignore":      "gen/\n",
		"static/app.css":  "body{}\n",
		"static/img/a.md": "# a\n",
		"gen/x.json":      "{}\n",
		"secret.txt":      "hidden\n",
	})
	s.velo(0, "deploy", site)
	for path, want := range map[string]string{
		"/fn/site/static/app.css":  "200 body{}\n",
		"/fn/site/static/img/a.md": "200 # a\n",
		"/fn/site/data/x.json":     "200 {}\n",
		"/fn/site/secret.txt":      "404 Not Found",
		"/fn/site/velo.toml":       "404 Not Found",
		"/fn/site/gen/x.json":      "404 Not Found",
	} {
		res, body := s.get(path)
		if got := res.Status[:3] + " " + body; got != want {
			t.Errorf("GET %s = %q, want %q", path, got, want)
		}
	}

	routes := wagiComponent(t, "routes.wasm", "name = \"r\"\nmodule = \"routes.wasm\"\nentrypoint = \"alt\"\n", nil)
	s.velo(0, "deploy", routes)
	for path, want := range map[string]string{
		"/fn/r/hello":       "hello",
		"/fn/r/goodbye/x/y": "goodbye",
		"/fn/r/anything":    "alt",
		"/fn/r/main":        "main",
	} {
		if res, body := s.get(path); res.StatusCode != 200 || !strings.HasPrefix(body, want+"\n") {
			t.Errorf("GET %s = %d %q, want %s's answer", path, res.StatusCode, body, want)
		}
	}
	if _, body := s.get("/fn/r/goodbye/x/y"); !strings.Contains(body, "X_MATCHED_ROUTE=/fn/r/goodbye/...\n") || !strings.Contains(body, "PATH_INFO=/x/y\n") {
		t.Errorf("routed variables: %q", body)
	}

	bad := wagiComponent(t, "badroutes2.wasm", "name = \"bad\"\nmodule = \"badroutes2.wasm\"\n", nil)
	if out := s.velo(1, "deploy", bad); !strings.Contains(out, `_routes: line 1 "this is not a route table"`) {
		t.Errorf("velo deploy of a bad _routes:\n%s", out)
	}
	missing := wagiComponent(t, "routes.wasm", "name = \"m\"\nfiles = [\"nothing/*\"]\n", nil)
	if out := s.velo(1, "deploy", missing); !strings.Contains(out, `files[0]: glob "nothing/*" matches no file in the component`) {
		t.Errorf("velo deploy with a glob matching nothing:\n%s", out)
	}
}

// wagiComponent writes a component directory: a test module of
// worker/wasm, velo.toml and files.
func wagiComponent(t *testing.T, module, toml string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	bin, err := os.ReadFile(filepath.Join("..", "..", "worker", "wasm", "testdata", module))
	if err != nil {
		t.Fatal(err)
	}
	files = mapWith(files, "velo.toml", toml)
	files[module] = string(bin)
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
