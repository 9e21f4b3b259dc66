package webui_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The component page sets and removes secrets with CSRF-protected forms
// and never shows a value: not in the page, not in the redirect.
func TestSecretsSection(t *testing.T) {
	v := startVelo(t, nil)
	v.deploy("echo", echoFiles(nil))
	b := v.browser()
	b.signInAdmin()
	tok := b.csrf()
	const value = "dash-secret-4e1f9b77"
	names := func() []string {
		list, err := v.c.Secrets(v.ctx, "echo")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range list {
			out = append(out, s.Name)
		}
		return out
	}

	code, page := b.get("/components/echo")
	if code != 200 || !strings.Contains(page, `id="secrets"`) || !strings.Contains(page, "No secrets yet") {
		t.Fatalf("component page (%d) has no empty secrets section", code)
	}

	// Without the session's CSRF token nothing is set.
	res, _ := b.do(http.MethodPost, "/components/echo/set-secret", url.Values{"key": {"API_KEY"}, "value": {value}})
	if res.StatusCode != http.StatusForbidden || len(names()) != 0 {
		t.Fatalf("set-secret without a CSRF token: %d, secrets %v", res.StatusCode, names())
	}

	res, body := b.do(http.MethodPost, "/components/echo/set-secret", url.Values{"csrf": {tok}, "key": {"API_KEY"}, "value": {value}})
	if res.StatusCode != http.StatusSeeOther || strings.Contains(res.Header.Get("Location"), value) || strings.Contains(body, value) {
		t.Fatalf("set-secret: %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	if got := names(); len(got) != 1 || got[0] != "API_KEY" {
		t.Fatalf("after set-secret: %v", got)
	}
	code, page = b.get(res.Header.Get("Location"))
	if code != 200 || !strings.Contains(page, "<code>API_KEY</code>") || !strings.Contains(page, "Secret set") || strings.Contains(page, value) {
		t.Errorf("page after setting (%d): lists API_KEY %v, shows the value %v",
			code, strings.Contains(page, "<code>API_KEY</code>"), strings.Contains(page, value))
	}

	// The checkbox marks a secret for previews; the table shows the mark.
	res, _ = b.do(http.MethodPost, "/components/echo/set-secret", url.Values{"csrf": {tok}, "key": {"SANDBOX_KEY"}, "value": {value}, "preview": {"true"}})
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("set-secret with preview: %d", res.StatusCode)
	}
	list, err := v.c.Secrets(v.ctx, "echo")
	if err != nil || len(list) != 2 || list[0].Name != "API_KEY" || list[0].Preview || !list[1].Preview {
		t.Fatalf("secrets after marking SANDBOX_KEY for previews: %+v, %v", list, err)
	}
	if _, page = b.get("/components/echo"); strings.Count(page, "for previews too") != 1 || strings.Count(page, "not for previews") != 1 {
		t.Errorf("the secrets table does not show which secret previews get")
	}
	if res, _ = b.do(http.MethodPost, "/components/echo/remove-secret", url.Values{"csrf": {tok}, "key": {"SANDBOX_KEY"}}); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("remove SANDBOX_KEY: %d", res.StatusCode)
	}

	// A bad name is refused with the reason.
	res, body = b.do(http.MethodPost, "/components/echo/set-secret", url.Values{"csrf": {tok}, "key": {"PATH_INFO"}, "value": {"x"}})
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "set by the runtime") {
		t.Errorf("set-secret PATH_INFO: %d", res.StatusCode)
	}

	res, _ = b.do(http.MethodPost, "/components/echo/remove-secret", url.Values{"key": {"API_KEY"}})
	if res.StatusCode != http.StatusForbidden || len(names()) != 1 {
		t.Errorf("remove-secret without a CSRF token: %d", res.StatusCode)
	}
	res, _ = b.do(http.MethodPost, "/components/echo/remove-secret", url.Values{"csrf": {tok}, "key": {"API_KEY"}})
	if res.StatusCode != http.StatusSeeOther || len(names()) != 0 {
		t.Errorf("remove-secret: %d, secrets %v", res.StatusCode, names())
	}
}
