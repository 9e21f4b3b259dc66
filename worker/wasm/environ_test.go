package wasm

import (
	"context"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// tinyModule assembles a WASI command whose _start calls
// environ_sizes_get(ptr, 4) in its one page of memory and exits with the
// errno it gets. imports names the module both functions are imported from.
func tinyModule(imports string, exportStart bool, ptr int32) []byte {
	section := func(id byte, body ...byte) []byte {
		return append([]byte{id, byte(len(body))}, body...)
	}
	name := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	sleb := func(v int32) (out []byte) {
		for {
			b := byte(v & 0x7f)
			v >>= 7
			if v == 0 && b&0x40 == 0 || v == -1 && b&0x40 != 0 {
				return append(out, b)
			}
			out = append(out, b|0x80)
		}
	}
	var imp []byte
	imp = append(imp, 2)
	imp = append(append(append(imp, name(imports)...), name("environ_sizes_get")...), 0, 0)
	imp = append(append(append(imp, name(imports)...), name("proc_exit")...), 0, 1)

	exports := []byte{1}
	exports = append(append(exports, name("memory")...), 2, 0)
	if exportStart {
		exports[0] = 2
		exports = append(append(exports, name("_start")...), 0, 2)
	}
	code := []byte{0, 0x41}
	code = append(code, sleb(ptr)...)
	code = append(code, 0x41, 4, 0x10, 0, 0x10, 1, 0x0b)

	bin := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	bin = append(bin, section(1, 3, 0x60, 2, 0x7f, 0x7f, 1, 0x7f, 0x60, 1, 0x7f, 0, 0x60, 0, 0)...)
	bin = append(bin, section(2, imp...)...)
	bin = append(bin, section(3, 1, 2)...)
	bin = append(bin, section(5, 1, 0, 1)...)
	bin = append(bin, section(7, exports...)...)
	bin = append(bin, section(10, append([]byte{1, byte(len(code))}, code...)...)...)
	return bin
}

func prepareBytes(t *testing.T, rt *Runtime, bin []byte, logs worker.LogSink) (worker.Instance, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tiny.wasm"), bin, 0o644); err != nil {
		t.Fatal(err)
	}
	return rt.Prepare(context.Background(), worker.Spec{
		Dir: dir, Logs: logs,
		Manifest: manifest.Manifest{Module: "tiny.wasm"},
	})
}

func TestEnvironFault(t *testing.T) {
	rt := newRuntime(t, Config{})
	for _, tt := range []struct {
		ptr  int32
		want string
	}{
		{16, "invalid CGI response: no output"}, // errno 0: exits cleanly, prints nothing
		{65534, "module exited with code 21"},   // errno 21: EFAULT, the count does not fit
		{-8, "module exited with code 21"},
	} {
		logs := &sink{}
		in, err := prepareBytes(t, rt, tinyModule("wasi_snapshot_preview1", true, tt.ptr), logs)
		if err != nil {
			t.Fatal(err)
		}
		res := serve(in, "GET", "/fn/echo", nil)
		if res.StatusCode != 502 {
			t.Errorf("ptr %d: status %d", tt.ptr, res.StatusCode)
		}
		if !logs.has(worker.System, tt.want) {
			t.Errorf("ptr %d: logs %q lack %q", tt.ptr, logs.all(), tt.want)
		}
		in.Close(context.Background())
	}
}

func TestPrepareRejectsNonWAGI(t *testing.T) {
	rt := newRuntime(t, Config{})
	for _, tt := range []struct {
		name string
		bin  []byte
		want string
	}{
		{"foreign import", tinyModule("env", true, 16), "imports env.environ_sizes_get: only wasi_snapshot_preview1 and wasi_experimental_http are provided"},
		{"no _start", tinyModule("wasi_snapshot_preview1", false, 16), "exports no _start"},
	} {
		_, err := prepareBytes(t, rt, tt.bin, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "module tiny.wasm: ") {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// envValue returns name's value in e's own entries.
func envValue(e *environ, name string) (string, bool) {
	for _, off := range e.offs {
		entry := string(e.buf[off:])
		entry = entry[:strings.IndexByte(entry, 0)]
		if k, v, ok := strings.Cut(entry, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// A request's environment is laid out without allocating (the bench's
// hello request made two: X_FULL_URL's string and net.SplitHostPort's
// error for a Host without a port), and X_FULL_URL is what
// URL.RequestURI says, whatever the URL.
func TestEnvironmentLayout(t *testing.T) {
	rt := newRuntime(t, Config{})
	spec := echoSpec(nil)
	spec.Manifest.Env = map[string]string{"GREETING": "hi"}
	spec.Secrets = map[string]string{"API_KEY": "k-123"}
	in := prepare(t, rt, spec).(*instance)
	c := rt.pools.get()
	defer rt.pools.put(c)

	for target, want := range map[string]float64{
		"http://example.com/fn/echo/bench?x=1": 0,
		"http://example.com/fn/echo/a%2Fb":     1, // URL.EscapedPath's, once
	} {
		r := httptest.NewRequest("GET", target, nil)
		r.Header.Set("User-Agent", "velo-test")
		if n := testing.AllocsPerRun(100, func() { in.moduleConfig(c, r, "/fn/echo") }); n > want {
			t.Errorf("%s: %v allocations per request's environment, want %v", target, n, want)
		}
	}

	for _, target := range []string{
		"http://example.com/fn/echo", "http://example.com/fn/echo/", "http://example.com:8080/fn/echo/a%20b?x=1&y=%2F",
		"http://[::1]:9/fn/echo?", "http://example.com/fn/echo/caf%C3%A9", "http://example.com/fn/echo/a;b",
	} {
		r := httptest.NewRequest("GET", target, nil)
		for _, u := range []*url.URL{r.URL, {Path: ""}, {Path: "/p", ForceQuery: true}, {Opaque: "//x/y", Scheme: "http", RawQuery: "q"}} {
			r.URL = u
			in.moduleConfig(c, r, "/fn/echo")
			got, _ := envValue(&c.env, "X_FULL_URL")
			if want := "http://" + r.Host + u.RequestURI(); got != want {
				t.Errorf("%s, URL %#v: X_FULL_URL %q, want %q", target, u, got, want)
			}
		}
	}
}
