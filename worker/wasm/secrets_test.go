package wasm

import (
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/worker"
)

// Secrets reach the module as environment variables beside [env], a
// secret winning over an [env] entry of the same name; and every variable
// the runtime sets itself is one no secret may be named (secrets.Reserved
// must stay in step with what Serve sets).
func TestSecretsInEnvironment(t *testing.T) {
	rt := newRuntime(t, Config{})
	spec := echoSpec(nil)
	spec.Secrets = map[string]string{"API_KEY": "k-123", "GREETING": "from the secret", "MULTI": "a b=c"}
	in := prepare(t, rt, spec)
	res := serve(in, "GET", "/fn/echo/env?x=1", nil)
	env := envOf(t, readAll(t, res))
	for k, want := range map[string]string{"API_KEY": "k-123", "GREETING": "from the secret", "MULTI": "a b=c", "HTTP_X_DEFAULT": "kept when no header sets it"} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}

	bare := prepare(t, rt, echoSpec(nil))
	req := serve(bare, "POST", "/fn/echo/env?a=b", strings.NewReader("body"))
	for k := range envOf(t, readAll(t, req)) {
		if _, fromManifest := echoSpec(nil).Manifest.Env[k]; fromManifest || strings.HasPrefix(k, "ARG") {
			continue // the manifest's own, and the test module's argv lines
		}
		if !secrets.Reserved(k) {
			t.Errorf("the runtime sets %s, which secrets.Reserved does not refuse as a secret name", k)
		}
	}

	// A secret that cannot be an environment variable fails Prepare
	// (deploymgr refuses it before, this is the last line).
	bad := echoSpec(nil)
	bad.Secrets = map[string]string{"PATH_INFO": "x"}
	if _, err := rt.Prepare(t.Context(), bad); err == nil {
		t.Error("a secret named PATH_INFO was accepted")
	}
}

// Secrets come last in the environment, each group in name order: a module
// walks the environment from the start to find a variable (getenv), so a
// secret placed before [env] or the CGI variables would make every lookup
// of those walk past it, the cost a module with secrets paid per request
// for variables it never asked for.
func TestSecretsLastInEnvironment(t *testing.T) {
	rt := newRuntime(t, Config{})
	spec := echoSpec(nil)
	spec.Secrets = map[string]string{"AAA_KEY": "first by name", "MID_KEY": "m", "ZZZ_KEY": "z"}
	in := prepare(t, rt, spec)
	var names []string
	for line := range strings.Lines(readAll(t, serve(in, "GET", "/fn/echo/env", nil))) {
		if name, _, _ := strings.Cut(line, "="); !strings.HasPrefix(name, "ARG") {
			names = append(names, name)
		}
	}
	want := []string{"GREETING", "HTTP_X_CUSTOM", "HTTP_X_DEFAULT", "AAA_KEY", "MID_KEY", "ZZZ_KEY"}
	if len(names) < len(want) || !slices.Equal(names[len(names)-len(want):], want) {
		t.Errorf("environment ends %q, want [env] then the secrets: %q", names[max(0, len(names)-len(want)):], want)
	}
}

// Each request of a deployment, served by instances used again and again,
// sees exactly its own CGI variables, the deployment's [env] and its
// secrets: requests of growing and shrinking size in turn with a second
// deployment of the same module whose secret was changed (what the worker
// prepares when a secret is set, its next request served by it), each
// environment checked whole.
func TestEnvironmentPerRequest(t *testing.T) {
	rt := newRuntime(t, Config{})
	spec := func(token string) worker.Spec {
		s := echoSpec(nil)
		// No HTTP_ name: the deployment's variables are laid out once.
		s.Manifest.Env = map[string]string{"GREETING": "hi", "MODE": "strict"}
		s.Secrets = map[string]string{"API_KEY": "k-123", "TOKEN": token}
		return s
	}
	old, updated := prepare(t, rt, spec("before")), prepare(t, rt, spec("after the change"))
	const requests = 24
	for i := range requests {
		in, token := old, "before"
		if i%2 == 1 {
			in, token = updated, "after the change"
		}
		n := (i * 7) % 40 // sizes up and down
		q := "q=" + strings.Repeat("x", n)
		r := httptest.NewRequest("GET", "http://example.com/fn/echo/env/"+strings.Repeat("p", 40-n)+"?"+q, nil)
		r.Header.Set("X-Req", strings.Repeat("h", n))
		w := httptest.NewRecorder()
		in.Serve(w, r, "/fn/echo")
		if w.Code != 200 {
			t.Fatalf("request %d: status %d: %s", i, w.Code, w.Body)
		}
		got := envOf(t, w.Body.String())
		want := map[string]string{
			"GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "Velo", "REQUEST_METHOD": "GET",
			"SCRIPT_NAME": "/fn/echo", "X_MATCHED_ROUTE": "/fn/echo/...",
			"PATH_INFO": "/env/" + strings.Repeat("p", 40-n), "PATH_TRANSLATED": "/env/" + strings.Repeat("p", 40-n),
			"X_RAW_PATH_INFO": "/env/" + strings.Repeat("p", 40-n), "QUERY_STRING": q,
			"CONTENT_TYPE": "", "CONTENT_LENGTH": "0", "SERVER_NAME": "example.com", "SERVER_PORT": "80",
			"SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "192.0.2.1", "REMOTE_HOST": "192.0.2.1",
			"AUTH_TYPE": "", "REMOTE_USER": "", "X_FULL_URL": r.URL.String(), "HTTP_HOST": "example.com",
			"HTTP_X_REQ": strings.Repeat("h", n),
			"GREETING":   "hi", "MODE": "strict", "API_KEY": "k-123", "TOKEN": token,
			"ARG0": r.URL.EscapedPath(), "ARG1": q,
		}
		if !maps.Equal(got, want) {
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("request %d: %s = %q (set: %v), want %q", i, k, g, ok, v)
				}
			}
			for k, v := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("request %d: unexpected %s=%q", i, k, v)
				}
			}
		}
	}
	if n := rt.warmNew.Load(); n > 4 {
		t.Errorf("%d instances made for %d requests: reuse did not happen", n, requests)
	}
}
