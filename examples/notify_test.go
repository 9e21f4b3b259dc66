// Package examples tests the example components that need Velo around
// them to run (examples/hello-docker tests itself).
package examples

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/node"
)

// TestNotify builds the example as its velo.toml says (clang and wasi-libc), deploys it into a
// whole Velo in this process (velo up) with allowed_hosts and WEBHOOK_URL
// pointed at a local webhook and its key set as a secret, and sends a
// message through it.
func TestNotify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const token = "xoxb-test-4d1f0c"

	// The webhook: wants the bearer token and Slack-style JSON.
	var mu sync.Mutex
	var got []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		var msg struct{ Text string }
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&msg) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, msg.Text)
		mu.Unlock()
		fmt.Fprintln(w, "ok")
	}))
	defer hook.Close()

	toml, err := os.ReadFile(filepath.Join("notify", manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(toml)
	if err != nil {
		t.Fatal(err)
	}
	// Built as velo.toml says, in a copy of the source.
	src, err := os.ReadFile(filepath.Join("notify", "notify.c"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notify.c"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("sh", "-c", m.Build)
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build (%s): %v\n%s", m.Build, err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, m.Module))
	if err != nil {
		t.Fatal(err)
	}
	// The example's own manifest, its webhook moved to the local one.
	local := strings.ReplaceAll(string(toml), "https://hooks.example.com", hook.URL)

	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c := client.New(n.URL, n.Token, nil)
	deploy := func(toml string) {
		t.Helper()
		d, err := c.Deploy(ctx, m.Name, bytes.NewReader(archivetest.TarGz(t, map[string][]byte{
			m.Module: bin, manifest.FileName: []byte(toml),
		})))
		if err != nil {
			t.Fatal(err)
		}
		for {
			dep, err := c.Deployment(ctx, d.ID)
			switch {
			case err == nil && dep.Status == "ready" && dep.Live:
				return
			case err == nil && dep.Status == "failed":
				t.Fatalf("deployment %d failed: %s\n%s", d.ID, dep.Error, dep.BuildLog)
			case ctx.Err() != nil:
				t.Fatalf("deployment %d never went live: %+v", d.ID, dep)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	post := func(msg string) (int, string) {
		t.Helper()
		res, err := http.Post(n.URL+"/fn/"+m.Name+"/", "text/plain", strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}

	deploy(local)
	if code, body := post("too early"); code != 500 || !strings.Contains(body, "set WEBHOOK_URL and NOTIFY_TOKEN") {
		t.Fatalf("POST before the secret is set = %d %q", code, body)
	}
	// The key is a secret, set after the deploy: the next request has it.
	if _, err := c.SetSecret(ctx, m.Name, "NOTIFY_TOKEN", token); err != nil {
		t.Fatal(err)
	}
	for {
		code, body := post("deploy of shop finished")
		if code == 200 && body == "sent (the webhook answered 200)\n" {
			break
		}
		if code != 500 || ctx.Err() != nil {
			t.Fatalf("POST = %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	if len(got) != 1 || got[0] != "deploy of shop finished" {
		t.Errorf("the webhook got %q", got)
	}
	mu.Unlock()

	// A webhook the manifest does not list is refused, and said so.
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the unlisted webhook was called")
	}))
	defer elsewhere.Close()
	deploy(strings.Replace(local, `WEBHOOK_URL = "`+hook.URL, `WEBHOOK_URL = "`+elsewhere.URL, 1))
	if code, body := post("hello"); code != 502 || !strings.Contains(body, "destination not allowed") {
		t.Fatalf("POST to an unlisted webhook = %d %q", code, body)
	}

	// Both calls are in the component's logs; the token is not.
	want := []string{"outbound POST " + hook.URL + ": 200", "outbound POST " + elsewhere.URL + ": refused: not in allowed_hosts"}
	for {
		lines, err := c.Logs(ctx, m.Name, 100)
		if err != nil {
			t.Fatal(err)
		}
		var all strings.Builder
		for _, l := range lines {
			fmt.Fprintln(&all, l.Line)
		}
		if strings.Contains(all.String(), token) {
			t.Fatalf("the token is in the logs:\n%s", all.String())
		}
		if strings.Contains(all.String(), want[0]) && strings.Contains(all.String(), want[1]) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("logs lack %q:\n%s", want, all.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
