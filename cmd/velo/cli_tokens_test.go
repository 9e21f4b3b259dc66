package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
)

// velo tokens create prints a new token's secret once; ls lists it by ID
// without the secret; rm revokes it and it stops working.
func TestTokensCLI(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	cli := func(want int, args ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append(args, "--server", n.URL, "--token", n.Token)
		if code := run(context.Background(), args, &out, &errOut); code != want {
			t.Fatalf("velo %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errOut.String())
		}
		return out.String(), errOut.String()
	}

	if out, _ := cli(0, "tokens", "ls"); !strings.Contains(out, "no API tokens") {
		t.Errorf("ls before any: %q", out)
	}
	out, errOut := cli(0, "tokens", "create", "--name", "ci-runner")
	secret := strings.TrimSpace(out)
	if !strings.HasPrefix(secret, "velo_") || !strings.Contains(errOut, "not shown again") {
		t.Fatalf("create printed %q / %q", out, errOut)
	}
	toks, err := client.New(n.URL, secret, nil).Tokens(ctx)
	if err != nil || len(toks) != 1 {
		t.Fatalf("the new token lists %+v %v", toks, err)
	}
	id := toks[0].ID
	out, _ = cli(0, "tokens", "ls")
	if !strings.Contains(out, id) || !strings.Contains(out, "ci-runner") || !strings.Contains(out, "admin") || strings.Contains(out, secret) {
		t.Errorf("ls:\n%s", out)
	}
	if out, _ := cli(0, "tokens", "rm", id); !strings.Contains(out, "revoked token "+id) {
		t.Errorf("rm: %q", out)
	}
	if _, err := client.New(n.URL, secret, nil).Tokens(ctx); err == nil {
		t.Error("a revoked token still works")
	}
	if _, errOut := cli(1, "tokens", "rm", id); !strings.Contains(errOut, id) {
		t.Errorf("rm of a revoked token: %q", errOut)
	}
}
