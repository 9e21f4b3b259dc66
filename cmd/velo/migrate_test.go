package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/pgtest"
)

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	t.Setenv("VELO_DATABASE_URL", "")
	if code := run(ctx, []string{"migrate"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "VELO_DATABASE_URL is not set") {
		t.Fatalf("migrate without a URL: exit %d, %q", code, errOut.String())
	}
	t.Setenv("VELO_DATABASE_URL", pgtest.URL(t))
	for i := 0; i < 2; i++ { // idempotent
		out.Reset()
		errOut.Reset()
		if code := run(ctx, []string{"migrate"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "postgres schema is up to date") {
			t.Fatalf("migrate run %d: exit %d, %q %q", i, code, out.String(), errOut.String())
		}
	}
}
