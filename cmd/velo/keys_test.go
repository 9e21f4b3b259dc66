package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestKeysCLI drives API keys through the real CLI against a whole
// in-process Velo: a private component refuses calls without a key, takes
// one made by `velo keys create`, sees its label but never the key, and
// refuses it again once `velo keys rm` revoked it.
func TestKeysCLI(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	toml := "name = \"vault\"\nmodule = \"secretenv.wasm\"\n[access]\npublic = false\n"
	if _, err := c.Deploy(ctx, "vault", bytes.NewReader(archivetest.TarGz(t, vaultFiles(toml)))); err != nil {
		t.Fatal(err)
	}
	call := func(path, key string) (int, string, http.Header) {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.n.URL+path, nil)
		if key != "" {
			req.Header.Set("X-Api-Key", key)
		}
		req.Header.Set("X-Velo-Auth-Key", "forged")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(res.Body)
		return res.StatusCode, b.String(), res.Header
	}
	testsupport.Eventually(t, 30*time.Second, "vault deployed and refusing calls without a key", func() bool {
		code, _, h := call("/fn/vault/get?PLAIN", "")
		return code == 401 && strings.HasPrefix(h.Get("WWW-Authenticate"), `Bearer realm="vault"`)
	})
	if out := s.velo(0, "keys", "ls", "vault"); !strings.Contains(out, "no API keys") {
		t.Fatalf("velo keys ls before any: %q", out)
	}
	out := s.velo(0, "keys", "create", "vault", "--label", "ci-bot")
	key, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(key, "velo_k_") || !strings.Contains(out, "shown only this once") {
		t.Fatalf("velo keys create printed %q", out)
	}
	testsupport.Eventually(t, 30*time.Second, "the new key admitted", func() bool {
		code, body, _ := call("/fn/vault/get?HTTP_X_VELO_AUTH_KEY", key)
		return code == 200 && body == "ci-bot"
	})
	if code, body, _ := call("/fn/vault/get?HTTP_X_API_KEY", key); code != 200 || body != "(unset)" {
		t.Fatalf("the component saw the key: %d %q", code, body)
	}
	if code, body, _ := call("/fn/vault/get?HTTP_X_VELO_AUTH_SUBJECT", key); code != 200 || !strings.HasPrefix(body, "key:") {
		t.Fatalf("subject: %d %q", code, body)
	}
	ls := s.velo(0, "keys", "ls", "vault")
	if !strings.Contains(ls, "ci-bot") || strings.Contains(ls, key) {
		t.Fatalf("velo keys ls: %q", ls)
	}
	id := strings.Fields(strings.Split(ls, "\n")[1])[0]
	s.velo(0, "keys", "rm", "vault", id)
	testsupport.Eventually(t, 30*time.Second, "the revoked key refused", func() bool {
		code, _, _ := call("/fn/vault/get?PLAIN", key)
		return code == 401
	})
	s.velo(1, "keys", "rm", "vault", id)
}
