package webui_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/github/githubtest"
)

var tokenSecret = regexp.MustCompile(`VELO_TOKEN=(velo_[A-Z0-9]+)`)

// The tokens page lists the visitor's API tokens (the admin: everyone's)
// with Revoke buttons; the secret shows once, on the page that creates it.
func TestTokensPage(t *testing.T) {
	gh := githubtest.New(t)
	cfg := gh.Config()
	v := startVelo(t, &cfg)
	gh.AddUser("alice")
	gh.AddUser("bob")
	gh.SignIn("alice")
	a := v.browser()
	a.signInGitHub()
	gh.SignIn("bob")
	b := v.browser()
	b.signInGitHub()

	// Alice creates a token from the dashboard.
	res, page := a.do(http.MethodPost, "/tokens", url.Values{"csrf": {a.csrf()}, "name": {"alice-laptop"}})
	m := tokenSecret.FindStringSubmatch(page)
	if res.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("create token: %d\n%s", res.StatusCode, page)
	}
	secret := m[1]
	toks, err := client.New(v.n.URL, secret, nil).Tokens(v.ctx)
	if err != nil || len(toks) != 1 || toks[0].Name != "alice-laptop" {
		t.Fatalf("alice's token lists %+v %v", toks, err)
	}
	id := toks[0].ID

	code, list := a.get("/tokens")
	if code != http.StatusOK || !strings.Contains(list, id) || !strings.Contains(list, "alice-laptop") || !strings.Contains(list, `action="/tokens/`+id+`/revoke"`) {
		t.Fatalf("alice's tokens page: %d\n%s", code, list)
	}
	if strings.Contains(list, secret) {
		t.Error("the tokens page shows a token's secret")
	}
	if _, list := b.get("/tokens"); strings.Contains(list, id) || strings.Contains(list, "alice-laptop") {
		t.Error("bob's tokens page shows alice's token")
	}
	// The admin sees it, with its user.
	adm := v.browser()
	adm.signInAdmin()
	if _, list := adm.get("/tokens"); !strings.Contains(list, id) || !strings.Contains(list, "github:alice") {
		t.Errorf("the admin's tokens page lacks alice's token:\n%s", list)
	}

	// Bob cannot revoke it; alice can, and it stops working.
	if res, _ := b.do(http.MethodPost, "/tokens/"+id+"/revoke", url.Values{"csrf": {b.csrf()}}); res.StatusCode != http.StatusNotFound {
		t.Errorf("bob revoking alice's token = %d, want 404", res.StatusCode)
	}
	if _, err := client.New(v.n.URL, secret, nil).Tokens(v.ctx); err != nil {
		t.Fatalf("alice's token dead after bob's attempt: %v", err)
	}
	if res, _ := a.do(http.MethodPost, "/tokens/"+id+"/revoke", url.Values{"csrf": {"wrong"}}); res.StatusCode != http.StatusForbidden {
		t.Errorf("revoke without the CSRF token = %d, want 403", res.StatusCode)
	}
	res, _ = a.do(http.MethodPost, "/tokens/"+id+"/revoke", url.Values{"csrf": {a.csrf()}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/tokens?done=revoked" {
		t.Fatalf("revoke: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	if _, err := client.New(v.n.URL, secret, nil).Tokens(v.ctx); err == nil {
		t.Error("a revoked token still works")
	}
	if _, list := a.get("/tokens?done=revoked"); strings.Contains(list, id) || !strings.Contains(list, "Token revoked") {
		t.Errorf("tokens page after revoking:\n%s", list)
	}
}
