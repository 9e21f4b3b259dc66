package wasm

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// moduleSpec is a spec for a test module in dir, mounted at /fn/NAME.
func moduleSpec(name, dir, module string, logs worker.LogSink) worker.Spec {
	return worker.Spec{
		Component: name,
		Dir:       dir,
		Manifest: manifest.Manifest{
			Name: name, Runtime: manifest.WASM, Module: module,
			Timeout: 5 * time.Second, Memory: 32 << 20,
			Env: map[string]string{"GREETING": "hi"},
		},
		Logs: logs,
	}
}

// get runs GET target through in, mounted at mount, and returns the status
// and body.
func get(t *testing.T, in worker.Instance, mount, target string) (int, string) {
	t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	w := httptest.NewRecorder()
	in.Serve(w, r, mount)
	return w.Code, w.Body.String()
}

// answerOf parses a handler's answer: its first line, then NAME=value lines.
func answerOf(body string) (string, map[string]string) {
	lines := strings.Split(strings.TrimRight(body, "\n"), "\n")
	vars := map[string]string{}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, "="); ok {
			vars[k] = v
		}
	}
	return lines[0], vars
}

// TestRoutesC runs routes.c, whose _routes declares exact, wildcard and
// overlapping routes, through every kind of match.
func TestRoutesC(t *testing.T) {
	rt := newRuntime(t, Config{})
	logs := &sink{}
	var buildLog bytes.Buffer
	spec := moduleSpec("r", "testdata", "routes.wasm", logs)
	spec.BuildLog = &buildLog
	in := prepare(t, rt, spec)
	for _, want := range []string{"route /hello → hello", "route /goodbye/... → goodbye", "route /main → _start"} {
		if !strings.Contains(buildLog.String(), want) {
			t.Errorf("build log lacks %q:\n%s", want, buildLog.String())
		}
	}

	tests := []struct {
		target, handler, script, pathInfo, rawPathInfo, matched string
	}{
		{"/fn/r", "main", "/fn/r", "", "", "/fn/r/..."},
		{"/fn/r/", "main", "/fn/r", "/", "/", "/fn/r/..."},
		{"/fn/r/hello", "hello", "/fn/r/hello", "", "", "/fn/r/hello"},
		// An exact route matches nothing below it, nor a longer name.
		{"/fn/r/hello/x", "main", "/fn/r", "/hello/x", "/hello/x", "/fn/r/..."},
		{"/fn/r/hellox", "main", "/fn/r", "/hellox", "/hellox", "/fn/r/..."},
		{"/fn/r/hello/", "main", "/fn/r", "/hello/", "/hello/", "/fn/r/..."},
		// A wildcard matches its own path and everything below it.
		{"/fn/r/goodbye", "goodbye", "/fn/r/goodbye", "", "", "/fn/r/goodbye/..."},
		{"/fn/r/goodbye/", "goodbye", "/fn/r/goodbye", "/", "/", "/fn/r/goodbye/..."},
		{"/fn/r/goodbye/a/b", "goodbye", "/fn/r/goodbye", "/a/b", "/a/b", "/fn/r/goodbye/..."},
		{"/fn/r/goodbye/a%20b?q=1", "goodbye", "/fn/r/goodbye", "/a b", "/a%20b", "/fn/r/goodbye/..."},
		{"/fn/r/goodbyes", "main", "/fn/r", "/goodbyes", "/goodbyes", "/fn/r/..."},
		// Overlapping wildcards: the one declared last wins.
		{"/fn/r/one/x", "one", "/fn/r/one", "/x", "/x", "/fn/r/one/..."},
		{"/fn/r/one/two", "two", "/fn/r/one/two", "", "", "/fn/r/one/two/..."},
		{"/fn/r/one/two/three/four", "two", "/fn/r/one/two", "/three/four", "/three/four", "/fn/r/one/two/..."},
		// A route may name _start.
		{"/fn/r/main", "main", "/fn/r/main", "", "", "/fn/r/main"},
		// exit(0) inside an export is a normal end.
		{"/fn/r/exit", "exit_zero", "/fn/r/exit", "", "", "/fn/r/exit"},
	}
	for _, tt := range tests {
		code, body := get(t, in, "/fn/r", tt.target)
		if code != 200 {
			t.Errorf("%s: status %d: %s", tt.target, code, body)
			continue
		}
		handler, vars := answerOf(body)
		if handler != tt.handler {
			t.Errorf("%s: served by %q, want %q", tt.target, handler, tt.handler)
		}
		for k, want := range map[string]string{"SCRIPT_NAME": tt.script, "PATH_INFO": tt.pathInfo, "X_RAW_PATH_INFO": tt.rawPathInfo, "X_MATCHED_ROUTE": tt.matched, "GREETING": "hi"} {
			if vars[k] != want {
				t.Errorf("%s: %s = %q, want %q", tt.target, k, vars[k], want)
			}
		}
	}

	// On its own host the routes hang off "/".
	_, body := get(t, in, "", "/goodbye/x")
	if handler, vars := answerOf(body); handler != "goodbye" || vars["SCRIPT_NAME"] != "/goodbye" || vars["X_MATCHED_ROUTE"] != "/goodbye/..." || vars["PATH_INFO"] != "/x" {
		t.Errorf("own host: %q %v", handler, vars)
	}

	// An export that exits non-zero is a failed module.
	if code, _ := get(t, in, "/fn/r", "/fn/r/fail"); code != 502 {
		t.Errorf("/fail: status %d, want 502", code)
	}
	if !logs.has(worker.System, "exited with code 4") || !logs.has(worker.Stderr, "fail: giving up") {
		t.Errorf("logs lack the failure: %q", logs.all())
	}
}

// TestEntrypoint runs another export than _start as the main entry, in C,
// Rust and Go (whose reactor has no _start at all).
func TestEntrypoint(t *testing.T) {
	rt := newRuntime(t, Config{})
	tests := []struct {
		module, entry, target, handler string
	}{
		{"routes.wasm", "alt", "/fn/e/anything", "alt"},
		{"routes.wasm", "alt", "/fn/e/hello", "hello"}, // routes still apply
		{"routes.wasm", "alt", "/fn/e/main", "main"},   // and /main names _start
		{"routes_rs.wasm", "ep1", "/fn/e/x", "entrypoint ep1 from Rust"},
		{"routes_rs.wasm", "", "/fn/e/x", "main from Rust"},
	} // Go: TestRoutesGo
	for _, tt := range tests {
		spec := moduleSpec("e", "testdata", tt.module, &sink{})
		spec.Manifest.Entrypoint = tt.entry
		in := prepare(t, rt, spec)
		code, body := get(t, in, "/fn/e", tt.target)
		if handler, _ := answerOf(body); code != 200 || handler != tt.handler {
			t.Errorf("%s entrypoint %q, %s: %d %q, want 200 %q", tt.module, tt.entry, tt.target, code, handler, tt.handler)
		}
	}

	for _, tt := range []struct{ module, entry, want string }{
		{"routes.wasm", "nope", `exports no function "nope"`},
		{"echo.wasm", "memory", `exports no function "memory"`},
	} {
		spec := moduleSpec("e", "testdata", tt.module, &sink{})
		spec.Manifest.Entrypoint = tt.entry
		_, err := rt.Prepare(context.Background(), spec)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s entrypoint %q: Prepare error %v, want %q", tt.module, tt.entry, err, tt.want)
		}
	}
}

// TestRoutesRust runs routes.rs, written like deislabs/wagi's own
// dynamic-routes test module.
func TestRoutesRust(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, moduleSpec("rs", "testdata", "routes_rs.wasm", &sink{}))
	for _, tt := range []struct{ target, handler, script, pathInfo, matched string }{
		{"/fn/rs", "main from Rust", "/fn/rs", "", "/fn/rs/..."},
		{"/fn/rs/exact", "exact from Rust", "/fn/rs/exact", "", "/fn/rs/exact"},
		{"/fn/rs/wildcard/fizz/buzz", "wildcard from Rust", "/fn/rs/wildcard", "/fizz/buzz", "/fn/rs/wildcard/..."},
		{"/fn/rs/main", "main from Rust", "/fn/rs/main", "", "/fn/rs/main"},
	} {
		code, body := get(t, in, "/fn/rs", tt.target)
		handler, vars := answerOf(body)
		if code != 200 || handler != tt.handler || vars["SCRIPT_NAME"] != tt.script || vars["PATH_INFO"] != tt.pathInfo || vars["X_MATCHED_ROUTE"] != tt.matched {
			t.Errorf("%s: %d %q %v", tt.target, code, handler, vars)
		}
	}
}

// TestRoutesGo runs gowagi, a Go reactor declaring routes with
// go:wasmexport, with `serve` as its entrypoint. (One test, one runtime:
// the Go module takes seconds to compile.)
func TestRoutesGo(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := filesTree(t, "routes_go.wasm")
	spec := moduleSpec("g", dir, "routes_go.wasm", &sink{})
	spec.Manifest.Entrypoint = "serve"
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}, {Pattern: "templates/*.html"}}
	in := prepare(t, rt, spec)
	// While in holds the compiled module, this reuses it.
	noEntry := spec
	noEntry.Manifest.Entrypoint = ""
	if _, err := rt.Prepare(context.Background(), noEntry); err == nil || !strings.Contains(err.Error(), "exports no _start function") {
		t.Errorf("a reactor without entrypoint: Prepare error %v", err)
	}
	for _, tt := range []struct{ target, handler, pathInfo, matched string }{
		{"/fn/g/x", "serve from Go", "/x", "/fn/g/..."},
		{"/fn/g/hello", "hello from Go", "", "/fn/g/hello/..."},
		{"/fn/g/hello/a/b", "hello from Go", "/a/b", "/fn/g/hello/..."},
	} {
		code, body := get(t, in, "/fn/g", tt.target)
		handler, vars := answerOf(body)
		if code != 200 || handler != tt.handler || vars["PATH_INFO"] != tt.pathInfo || vars["X_MATCHED_ROUTE"] != tt.matched {
			t.Errorf("%s: %d %q %v", tt.target, code, handler, vars)
		}
	}
	code, body := get(t, in, "/fn/g", "/fn/g/files")
	want := "/: static templates (err <nil>)\npage.html: <h1>{{.Title}}</h1> (err <nil>)\nsecret.txt: true\nwrite: true\n"
	if code != 200 || body != want {
		t.Errorf("/files: %d %q, want %q", code, body, want)
	}
}

// TestBadRoutes checks that a _routes that fails in any way fails Prepare
// with the reason, and that its stderr reaches the build log.
func TestBadRoutes(t *testing.T) {
	rt := newRuntime(t, Config{})
	tests := []struct {
		mode int
		want string
	}{
		{1, "_routes: wasm error: unreachable"},
		{2, `_routes: line 1 "this is not a route table": want a path and an export`},
		{3, `_routes: route /missing: exports no function "nowhere"`},
		{4, "_routes: printed no routes"},
		{5, "_routes: exited with code 2"},
		{6, "_routes: did not return within 300ms"},
	}
	for _, tt := range tests {
		var buildLog bytes.Buffer
		spec := moduleSpec("bad", "testdata", "badroutes"+string(rune('0'+tt.mode))+".wasm", &sink{})
		spec.Manifest.Timeout = 300 * time.Millisecond
		spec.BuildLog = &buildLog
		in, err := rt.Prepare(context.Background(), spec)
		if err == nil {
			in.Close(context.Background())
			t.Errorf("mode %d: Prepare succeeded", tt.mode)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("mode %d: error %q, want %q", tt.mode, err, tt.want)
		}
		if tt.mode == 5 && !strings.Contains(buildLog.String(), "_routes stderr: no routes today") {
			t.Errorf("build log lacks _routes' stderr:\n%s", buildLog.String())
		}
	}
}

func TestParseRoutes(t *testing.T) {
	good := "/... all\n/a a\n\n  b/... b  \r\n/x/y/... xy\n/x/... x\n"
	routes, err := parseRoutes([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []wagiRoute{
		{declared: "/...", path: "", wildcard: true, entry: "all"},
		{declared: "/a", path: "/a", entry: "a"},
		{declared: "/b/...", path: "/b", wildcard: true, entry: "b"},
		{declared: "/x/y/...", path: "/x/y", wildcard: true, entry: "xy"},
		{declared: "/x/...", path: "/x", wildcard: true, entry: "x"},
	}
	if len(routes) != len(want) {
		t.Fatalf("got %+v", routes)
	}
	for i := range want {
		if routes[i] != want[i] {
			t.Errorf("route %d = %+v, want %+v", i, routes[i], want[i])
		}
	}
	// WAGI's rule: the last declared match wins. /x/... comes after
	// /x/y/..., so it takes /x/y too, and /... (declared first) takes what
	// no other route matches.
	d := newDispatch("/fn/c", startEntry, routes)
	for path, entry := range map[string]string{
		"/fn/c/a": "a", "/fn/c/a/b": "all", "/fn/c/b/q": "b", "/fn/c/x/y/z": "x", "/fn/c/q": "all", "/fn/c": "all",
	} {
		if tg, _, _ := d.resolve(path, path); tg.entry != entry {
			t.Errorf("%s → %s, want %s", path, tg.entry, entry)
		}
	}
	warnings := strings.Join(shadowed(routes), "\n")
	if !strings.Contains(warnings, "route /x/y/... xy is never used: /x/... x") {
		t.Errorf("no warning for the shadowed route: %q", warnings)
	}
	if strings.Contains(warnings, "/a a") || strings.Contains(warnings, "/... all") {
		t.Errorf("a reachable route reported as never used: %q", warnings)
	}

	for _, bad := range []string{"", "\n \n", "/a", "/a a a", "/a\x01 a", "\xff\xfe x", "/a?b a"} {
		if _, err := parseRoutes([]byte(bad)); err == nil {
			t.Errorf("parseRoutes(%q) accepted", bad)
		}
	}
	if _, err := parseRoutes([]byte(strings.Repeat("/a a\n", maxRoutes+1))); err == nil {
		t.Error("more than maxRoutes routes accepted")
	}
}

// copyModule copies a test module into dir.
func copyModule(t *testing.T, dir, module string) { copyModuleTB(t, dir, module) }

func copyModuleTB(t testing.TB, dir, module string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", module))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, module), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLenientHeaders checks that a header line without a colon is skipped
// with a line in the component's logs, as WAGI and Spin skip it.
func TestLenientHeaders(t *testing.T) {
	rt := newRuntime(t, Config{})
	logs := &sink{}
	in := prepare(t, rt, moduleSpec("r", "testdata", "routes.wasm", logs))
	r := httptest.NewRequest("GET", "/fn/r/lenient", nil)
	w := httptest.NewRecorder()
	in.Serve(w, r, "/fn/r")
	if w.Code != 200 || w.Body.String() != "lenient\n" || w.Header().Get("X-After") != "yes" {
		t.Errorf("%d %v %q", w.Code, w.Header(), w.Body)
	}
	if !logs.has(worker.System, `GET /fn/r/lenient: skipped CGI header line "this is no header"`) {
		t.Errorf("no log line for the skipped header: %q", logs.all())
	}
}

func writeTestFile(dir, name, body string) error {
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(body), 0o644)
}
