package wasm

import (
	"slices"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/secrets"
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
