package wasm

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// filesTree lays out a component with files to mount and files that must
// stay hidden, plus the given test modules, and returns its directory.
func filesTree(t *testing.T, modules ...string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"velo.toml":            "module = \"x.wasm\"\n",
		"secret.txt":           "not for the module\n",
		"static/app.css":       "body { color: red }\n",
		"static/img/logo.png":  "\x89PNG fake\n",
		"static/sub/deep.txt":  "deep\n",
		"templates/page.html":  "<h1>{{.Title}}</h1>\n",
		"templates/notes.txt":  "not matched by *.html\n",
		"assets/site.js":       "console.log(1)\n",
		"assets/fonts/a.woff2": "font\n",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range modules {
		copyModule(t, dir, m)
	}
	return dir
}

// TestFileServer serves files with fileserver.c, a C module that does what
// deislabs/wagi-fileserver does, from `files` globs and a table.
func TestFileServer(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := filesTree(t, "fileserver.wasm")
	// A symlink leaving the artifact; archives never hold one (Unpack
	// refuses it), and even so the module must not read through it.
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "static", "passwd")); err != nil {
		t.Fatal(err)
	}
	logs := &sink{}
	spec := moduleSpec("fs", dir, "fileserver.wasm", logs)
	spec.Manifest.Files = []manifest.FileMount{
		{Pattern: "static/**"},
		{Pattern: "templates/*.html"},
		{Source: "assets", Destination: "/public"},
	}
	spec.Manifest.Env = map[string]string{"CSS_CACHE_CONTROL": "max-age=60"}
	in := prepare(t, rt, spec)

	tests := []struct {
		path, status, ctype, cache, body string
	}{
		{"/static/app.css", "200", "text/css", "max-age=60", "body { color: red }\n"},
		{"/static/img/logo.png", "200", "image/png", "no-cache", "\x89PNG fake\n"},
		{"/static/sub/deep.txt", "200", "text/plain", "no-cache", "deep\n"},
		{"/templates/page.html", "200", "text/html", "no-cache", "<h1>{{.Title}}</h1>\n"},
		{"/public/site.js", "200", "text/javascript", "no-cache", "console.log(1)\n"},
		{"/public/fonts/a.woff2", "200", "font/woff2", "no-cache", "font\n"},
		// Nothing else of the artifact, nor of the host, is there.
		{"/templates/notes.txt", "404", "", "", "Not Found"},
		{"/assets/site.js", "404", "", "", "Not Found"},
		{"/secret.txt", "404", "", "", "Not Found"},
		{"/velo.toml", "404", "", "", "Not Found"},
		{"/fileserver.wasm", "404", "", "", "Not Found"},
		{"/static/../secret.txt", "404", "", "", "Not Found"},
		{"/../secret.txt", "404", "", "", "Not Found"},
		{"/static/passwd", "404", "", "", "Not Found"},
		{"/etc/passwd", "404", "", "", "Not Found"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/fn/fs"+tt.path, nil)
		w := httptest.NewRecorder()
		in.Serve(w, r, "/fn/fs")
		if got := w.Code; tt.status != strconv.Itoa(got) {
			t.Errorf("%s: status %d, want %s (%q)", tt.path, got, tt.status, w.Body)
			continue
		}
		if tt.ctype != "" && w.Header().Get("Content-Type") != tt.ctype || tt.cache != "" && w.Header().Get("Cache-Control") != tt.cache {
			t.Errorf("%s: headers %v", tt.path, w.Header())
		}
		if w.Body.String() != tt.body {
			t.Errorf("%s: body %q, want %q", tt.path, w.Body, tt.body)
		}
	}
	if !logs.has(worker.Stderr, "Fileserver: cannot open secret.txt") {
		t.Errorf("the module's stderr is not in the logs: %q", logs.all())
	}

	// WAGI's volumes = {"/" = "static"}: a directory's contents at "/".
	spec.Manifest.Files = []manifest.FileMount{{Source: "static", Destination: "/"}}
	in = prepare(t, rt, spec)
	if code, body := get(t, in, "/fn/fs", "/fn/fs/app.css"); code != 200 || body != "body { color: red }\n" {
		t.Errorf("volume at /: %d %q", code, body)
	}
	if code, _ := get(t, in, "/fn/fs", "/fn/fs/static/app.css"); code != 404 {
		t.Errorf("volume at /: the tree path answered %d", code)
	}
}

// TestFilesReadOnly checks that the mounted files cannot be changed or
// added to, and that a module without `files` has no filesystem at all.
func TestFilesReadOnly(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := filesTree(t, "routes.wasm")
	spec := moduleSpec("w", dir, "routes.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
	in := prepare(t, rt, spec)
	code, body := get(t, in, "/fn/w", "/fn/w/write")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		if strings.Contains(line, "succeeded") {
			t.Errorf("%s", line)
		}
	}
	if want := "open for writing: Read-only file system\ncreate: Read-only file system\nunlink: Read-only file system\nmkdir: Read-only file system\n"; body != want {
		t.Errorf("write_probe: %q, want %q", body, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "static", "app.css")); err != nil || string(b) != "body { color: red }\n" {
		t.Errorf("app.css changed: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "static", "new.txt")); err == nil {
		t.Error("the module created a file")
	}

	spec.Manifest.Files = nil
	in = prepare(t, rt, spec)
	_, body = get(t, in, "/fn/w", "/fn/w/write")
	if strings.Contains(body, "succeeded") || !strings.Contains(body, "open for writing: Capabilities insufficient") {
		t.Errorf("without files: %q", body)
	}
}

// TestFilesRust lists "/" and reads a template the way env_wagi does, from
// a Rust module.
func TestFilesRust(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := filesTree(t, "routes_rs.wasm")
	spec := moduleSpec("rs", dir, "routes_rs.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "templates/*.html"}, {Source: "assets", Destination: "/assets"}}
	in := prepare(t, rt, spec)
	code, body := get(t, in, "/fn/rs", "/fn/rs/files")
	want := "/: assets templates\npage.html: <h1>{{.Title}}</h1>\nvelo.toml: true\n"
	if code != 200 || body != want {
		t.Errorf("%d %q, want %q", code, body, want)
	}
}

// TestFilesErrors checks that Prepare refuses files it cannot mount.
func TestFilesErrors(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := filesTree(t, "fileserver.wasm")
	for _, tt := range []struct {
		files []manifest.FileMount
		want  string
	}{
		{[]manifest.FileMount{{Pattern: "nothing/**"}}, `glob "nothing/**" matches no file`},
		{[]manifest.FileMount{{Source: "missing", Destination: "/m"}}, `source "missing" is not in the component`},
		{[]manifest.FileMount{{Source: "secret.txt", Destination: "/static/app.css"}, {Pattern: "static/*"}}, "would both be /static/app.css"},
	} {
		spec := moduleSpec("fs", dir, "fileserver.wasm", &sink{})
		spec.Manifest.Files = tt.files
		in, err := rt.Prepare(context.Background(), spec)
		if err == nil {
			in.Close(context.Background())
			t.Errorf("%+v: Prepare succeeded", tt.files)
		} else if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.files, err, tt.want)
		}
	}
}
