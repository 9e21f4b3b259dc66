package main

import (
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/manifest"
)

func TestHandler(t *testing.T) {
	for _, tc := range []struct{ greeting, want string }{
		{"", "Hello from a container! You asked for /a/b\n"},
		{"Salut", "Salut from a container! You asked for /a/b\n"},
	} {
		w := httptest.NewRecorder()
		handler(tc.greeting).ServeHTTP(w, httptest.NewRequest("GET", "/a/b", nil))
		if w.Code != 200 || w.Body.String() != tc.want {
			t.Errorf("greeting %q: %d %q, want %q", tc.greeting, w.Code, w.Body.String(), tc.want)
		}
	}
}

func TestManifest(t *testing.T) {
	m, err := manifest.Load(os.DirFS("."), "ignored")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "hello-docker" || m.Runtime != manifest.Docker || m.Port != 8080 || m.Scale.Min != 0 || m.Scale.Max != 2 || m.Env["GREETING"] == "" {
		t.Errorf("manifest %+v", m)
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FROM velo-debian:bookworm", "COPY hello /hello", "USER 65534"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
