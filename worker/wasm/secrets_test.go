package wasm

import (
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
