package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
)

// TestWebuiRole runs `velo webui` on Postgres next to a Velo that deployed a
// component there: the admin signs in with the pasted token and sees it,
// and the log stream the page opens answers with the session.
func TestWebuiRole(t *testing.T) {
	db := pgtest.URL(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), DatabaseURL: db})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	_, err = client.New(n.URL, n.Token, nil).Deploy(ctx, "echo", bytes.NewReader(archivetest.TarGz(t, map[string]string{
		"echo.wasm": echoWasm(t), "velo.toml": "name = \"echo\"\n",
	})))
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("VELO_DATABASE_URL", db)
	t.Setenv("VELO_ADMIN_TOKEN", "webui-admin-token")
	rctx, stop := context.WithCancel(ctx)
	var out, errOut bytes.Buffer
	done := make(chan int)
	go func() { done <- run(rctx, []string{"webui", "--addr", addr}, &out, &errOut) }()
	defer func() {
		stop()
		if code := <-done; code != 0 {
			t.Errorf("velo webui exited %d: %s", code, errOut.String())
		}
	}()
	base := "http://" + addr
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 5 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := c.Get(base + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("velo webui not up: %v\n%s", err, errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	get := func(path string) (int, string) {
		t.Helper()
		res, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(res.Body)
		return res.StatusCode, b.String()
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "Sign in to Velo") || strings.Contains(body, "echo") {
		t.Fatalf("signed out: %d", code)
	}
	res, err := c.PostForm(base+"/login", url.Values{"token": {"webui-admin-token"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	code, body := get("/")
	if code != 200 || !strings.Contains(body, `href="/components/echo"`) {
		t.Fatalf("components list on the webui role: %d\n%s", code, body)
	}
	if code, _ := get("/components/echo"); code != 200 {
		t.Errorf("component page: %d", code)
	}
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	req, _ := http.NewRequestWithContext(sctx, http.MethodGet, base+"/api/v1/components/echo/logs?follow=1&tail=0", nil)
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("log stream: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
}
