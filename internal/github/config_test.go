package github

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKeyPEM(t *testing.T) []byte {
	t.Helper()
	// 1024 bits keeps the test fast; only parsing is under test here.
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func TestConfigValidate(t *testing.T) {
	key := testKeyPEM(t)
	good := Config{AppID: 1, PrivateKey: key, WebhookSecret: []byte("s")}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	tests := []struct {
		field string
		edit  func(c *Config)
	}{
		{"AppID", func(c *Config) { c.AppID = 0 }},
		{"PrivateKey", func(c *Config) { c.PrivateKey = nil }},
		{"PrivateKey", func(c *Config) {
			c.PrivateKey = []byte("-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----\n")
		}},
		{"WebhookSecret", func(c *Config) { c.WebhookSecret = nil }},
		{"ClientSecret", func(c *Config) { c.ClientID = "Iv1.x" }},
		{"APIURL", func(c *Config) { c.APIURL = "api.github.com" }},
		{"APIURL", func(c *Config) { c.APIURL = "ftp://x/" }},
		{"WebURL", func(c *Config) { c.WebURL = "https://github.com/?x=1" }},
	}
	for _, tt := range tests {
		c := good
		tt.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: err = %v, want one naming the field", tt.field, err)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	key := testKeyPEM(t)
	path := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}

	_, ok, err := ConfigFromEnv(env(map[string]string{EnvWebURL: "https://ghe.example.com"}))
	if ok || err != nil {
		t.Fatalf("no credentials: ok=%v err=%v, want not configured", ok, err)
	}

	full := map[string]string{
		EnvAppID: "123456", EnvPrivateKeyFile: path, EnvWebhookSecret: "shh",
		EnvClientID: "Iv1.abc", EnvClientSecret: "sec",
		EnvAPIURL: "https://ghe.example.com/api/v3", EnvWebURL: "https://ghe.example.com/",
	}
	cfg, ok, err := ConfigFromEnv(env(full))
	if !ok || err != nil {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if cfg.AppID != 123456 || string(cfg.PrivateKey) != string(key) || string(cfg.WebhookSecret) != "shh" ||
		cfg.ClientID != "Iv1.abc" || cfg.ClientSecret != "sec" ||
		cfg.APIURL != "https://ghe.example.com/api/v3/" || cfg.WebURL != "https://ghe.example.com" {
		t.Errorf("config %+v", cfg)
	}

	delete(full, EnvAPIURL)
	delete(full, EnvWebURL)
	cfg, _, err = ConfigFromEnv(env(full))
	if err != nil || cfg.APIURL != DefaultAPIURL || cfg.WebURL != DefaultWebURL {
		t.Errorf("defaults: %q %q %v", cfg.APIURL, cfg.WebURL, err)
	}

	for k, v := range map[string]string{EnvAppID: "12x", EnvPrivateKeyFile: filepath.Join(t.TempDir(), "missing.pem")} {
		bad := map[string]string{}
		for k2, v2 := range full {
			bad[k2] = v2
		}
		bad[k] = v
		if _, ok, err := ConfigFromEnv(env(bad)); !ok || err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: ok=%v err=%v, want an error naming it", k, v, ok, err)
		}
	}
	if _, ok, err := ConfigFromEnv(env(map[string]string{EnvAppID: "1"})); !ok || err == nil {
		t.Errorf("partial config: ok=%v err=%v, want an error", ok, err)
	}
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", 200)
	got := truncate(long, maxDescription)
	if n := len([]rune(got)); n != maxDescription || !strings.HasSuffix(got, "…") {
		t.Errorf("truncate: %d runes %q", n, got)
	}
	if truncate("short", maxDescription) != "short" {
		t.Error("short string changed")
	}
}

func TestCappedBody(t *testing.T) {
	data := strings.Repeat("x", 100)
	b := &cappedBody{rc: io.NopCloser(strings.NewReader(data)), left: 100}
	if got, err := io.ReadAll(b); err != nil || len(got) != 100 {
		t.Fatalf("exact limit: %d bytes, %v", len(got), err)
	}
	b = &cappedBody{rc: io.NopCloser(strings.NewReader(data)), left: 99}
	got, err := io.ReadAll(b)
	if !errors.Is(err, ErrTooLarge) || len(got) != 99 {
		t.Fatalf("over limit: %d bytes, %v", len(got), err)
	}
}

func TestAppManifest(t *testing.T) {
	b, err := json.Marshal(AppManifest("velo-test", "https://velo.example.com/"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Name           string `json:"name"`
		URL            string `json:"url"`
		HookAttributes struct {
			URL    string `json:"url"`
			Active bool   `json:"active"`
		} `json:"hook_attributes"`
		RedirectURL   string            `json:"redirect_url"`
		CallbackURLs  []string          `json:"callback_urls"`
		Public        *bool             `json:"public"`
		Permissions   map[string]string `json:"default_permissions"`
		DefaultEvents []string          `json:"default_events"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Name != "velo-test" || m.URL != "https://velo.example.com" ||
		m.HookAttributes.URL != "https://velo.example.com/webhooks/github" || !m.HookAttributes.Active ||
		m.RedirectURL != "https://velo.example.com"+ManifestRedirectPath ||
		len(m.CallbackURLs) != 1 || m.CallbackURLs[0] != "https://velo.example.com/auth/github/callback" ||
		m.Public == nil || *m.Public ||
		len(m.Permissions) != 4 || m.Permissions["contents"] != "read" || m.Permissions["deployments"] != "write" || m.Permissions["metadata"] != "read" ||
		m.Permissions["pull_requests"] != "write" ||
		len(m.DefaultEvents) != 2 || m.DefaultEvents[0] != "push" || m.DefaultEvents[1] != "pull_request" {
		t.Errorf("manifest %s", b)
	}
}
