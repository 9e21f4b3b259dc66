package manifest

import (
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseWAGI(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Manifest
	}{
		{"entrypoint", `entrypoint = "serve"`, Manifest{Entrypoint: "serve"}},
		{"files globs and a table", `files = ["static/**", "templates/*.html", { source = "assets", destination = "/assets" }]`,
			Manifest{Files: []FileMount{{Pattern: "static/**"}, {Pattern: "templates/*.html"}, {Source: "assets", Destination: "/assets"}}}},
		{"files array of tables", "[[files]]\nsource = \"a\"\ndestination = \"/b\"\n",
			Manifest{Files: []FileMount{{Source: "a", Destination: "/b"}}}},
		{"wagi volumes", `volumes = { "/data" = "data", "/" = "static" }`,
			Manifest{Files: []FileMount{{Source: "static", Destination: "/"}, {Source: "data", Destination: "/data"}}}},
		{"files and volumes", "files = [\"a/*\"]\nvolumes = { \"/v\" = \"v\" }",
			Manifest{Files: []FileMount{{Pattern: "a/*"}, {Source: "v", Destination: "/v"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseWAGIErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"entrypoint type", `entrypoint = 1`, `velo.toml: entrypoint: must be a string, not integer`},
		{"entrypoint empty", `entrypoint = ""`, `velo.toml: entrypoint: must be the name of an exported function (1 to 256 bytes)`},
		{"entrypoint blank", `entrypoint = "my main"`, `velo.toml: entrypoint: "my main" holds a blank or control character; name an exported function`},
		{"entrypoint typo", `entrypiont = "x"`, `velo.toml: unknown key "entrypiont" (did you mean "entrypoint"?)`},
		{"files string", `files = "static/**"`, `velo.toml: files: must be an array of globs and { source, destination } tables, not string`},
		{"files absolute", `files = ["/etc/passwd"]`, `velo.toml: files[0]: glob "/etc/passwd" must be a path relative to the component's root, inside it`},
		{"files escape", `files = ["a", "../x/*"]`, `velo.toml: files[1]: glob "../x/*" must be a path relative to the component's root, inside it`},
		{"files bad glob", `files = ["a/[b"]`, `velo.toml: files[0]: glob "a/[b": malformed element "[b"`},
		{"files number", `files = [1]`, `velo.toml: files[0]: must be a glob string or a { source, destination } table, not integer`},
		{"table no destination", `files = [{ source = "a" }]`, `velo.toml: files[0]: a table needs both source and destination`},
		{"table unknown key", `files = [{ source = "a", destination = "/a", mode = "ro" }]`, `velo.toml: files[0]: unknown key "mode" (a table has source and destination)`},
		{"table relative destination", `files = [{ source = "a", destination = "a" }]`, `velo.toml: files[0]: destination "a" must be a clean absolute path such as "/assets"`},
		{"table unclean destination", `files = [{ source = "a", destination = "/a/../b" }]`, `velo.toml: files[0]: destination "/a/../b" must be a clean absolute path such as "/assets"`},
		{"table glob source", `files = [{ source = "a/*", destination = "/a" }]`, `velo.toml: files[0]: source "a/*" is a glob; a table's source is a file or directory (write globs as plain strings)`},
		{"table absolute source", `files = [{ source = "/srv", destination = "/a" }]`, `velo.toml: files[0]: source "/srv" must be a path relative to the component's root, inside it`},
		{"volumes host path", `volumes = { "/data" = "/var/data" }`, `velo.toml: volumes: source "/var/data" must be a path relative to the component's root, inside it`},
		{"volumes not table", `volumes = ["/data"]`, `velo.toml: volumes: must be a table of "/guest/path" = "directory" (or use files), not array`},
		{"volumes guest relative", `volumes = { "data" = "data" }`, `velo.toml: volumes: destination "data" must be a clean absolute path such as "/assets"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v", m)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse error\n got %q\nwant %q", err, tt.want)
			}
		})
	}
}

func TestResolveFiles(t *testing.T) {
	fsys := fstest.MapFS{
		"velo.toml":           file(""),
		"app.wasm":            file(""),
		"static/a.css":        file(""),
		"static/img/b.png":    file(""),
		"static/.git/config":  file(""),
		"templates/x.html":    file(""),
		"templates/y.txt":     file(""),
		"assets/site.js":      file(""),
		"assets/sub/font.ttf": file(""),
		"LICENSE":             file(""),
	}
	got, err := ResolveFiles(fsys, []FileMount{
		{Pattern: "static/**"},
		{Pattern: "templates/*.html"},
		{Pattern: "./LICENSE"},
		{Source: "assets", Destination: "/public"},
		{Source: "templates/y.txt", Destination: "/etc/y.txt"},
		{Pattern: "static/*.css"}, // again: the same file at the same place is fine
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []MountedFile{
		{"LICENSE", "/LICENSE"},
		{"templates/y.txt", "/etc/y.txt"},
		{"assets/site.js", "/public/site.js"},
		{"assets/sub/font.ttf", "/public/sub/font.ttf"},
		{"static/a.css", "/static/a.css"},
		{"static/img/b.png", "/static/img/b.png"},
		{"templates/x.html", "/templates/x.html"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ResolveFiles =\n%v\nwant\n%v", got, want)
	}

	for _, tt := range []struct {
		mounts []FileMount
		want   string
	}{
		{[]FileMount{{Pattern: "nope/*"}}, `velo.toml: files[0]: glob "nope/*" matches no file in the component`},
		{[]FileMount{{Pattern: "static/*.txt"}}, `velo.toml: files[0]: glob "static/*.txt" matches no file in the component`},
		{[]FileMount{{Source: "missing", Destination: "/m"}}, `velo.toml: files[0]: source "missing" is not in the component`},
		{[]FileMount{{Pattern: "LICENSE"}, {Source: "app.wasm", Destination: "/LICENSE"}}, `velo.toml: files[1]: LICENSE and app.wasm would both be /LICENSE`},
		{[]FileMount{{Source: "LICENSE", Destination: "/static"}, {Pattern: "static/*"}}, `velo.toml: files: /static is a file (LICENSE), so /static/a.css (static/a.css) cannot be inside it`},
		{[]FileMount{{Source: "LICENSE", Destination: "/"}}, `velo.toml: files[0]: LICENSE is a file; it cannot be mounted at / (give a destination such as /LICENSE)`},
	} {
		if _, err := ResolveFiles(fsys, tt.mounts); err == nil || err.Error() != tt.want {
			t.Errorf("ResolveFiles(%+v) = %v, want %q", tt.mounts, err, tt.want)
		}
	}
}

func TestLoadWAGI(t *testing.T) {
	fsys := fstest.MapFS{
		"velo.toml":    file("entrypoint = \"serve\"\nfiles = [\"static/**\"]\n"),
		"app.wasm":     file("\x00asm"),
		"static/x.css": file(""),
	}
	m, err := Load(fsys, "app")
	if err != nil {
		t.Fatal(err)
	}
	if m.Entrypoint != "serve" || !reflect.DeepEqual(m.Files, []FileMount{{Pattern: "static/**"}}) {
		t.Errorf("Load = %+v", m)
	}

	for _, tt := range []struct {
		fsys fstest.MapFS
		want string
	}{
		{fstest.MapFS{"velo.toml": file(`files = ["static/**"]`), "app.wasm": file("")}, `glob "static/**" matches no file in the component`},
		{fstest.MapFS{"velo.toml": file(`files = ["x"]`), "x": file(""), "Dockerfile": file("FROM scratch")}, "velo.toml: files: only a wasm component mounts files"},
		{fstest.MapFS{"velo.toml": file(`entrypoint = "x"`), "Dockerfile": file("FROM scratch")}, "velo.toml: entrypoint: only a wasm component has one"},
	} {
		if _, err := Load(tt.fsys, "app"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load: %v, want %q", err, tt.want)
		}
	}
}
