package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/client"
)

const token = "s3cret"

// request is what the fake server saw.
type request struct {
	Method, Path, Query, ContentType, Body string
}

// fakeAPI answers every endpoint with fixed values and records requests.
// The second result returns the requests seen since its last call.
func fakeAPI(t *testing.T) (*client.Client, func() []request) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []request
	)
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	hello := api.Component{Name: "hello", Runtime: "wasm", Status: "live", URL: "http://x/fn/hello",
		Live: &api.Deployment{ID: 7, Status: "ready", Live: true}, Instances: []api.Instance{{Deployment: 7, Worker: "w1", State: "ready"}},
		CreatedAt: now, UpdatedAt: now}
	dep := api.Deployment{ID: 8, Component: "hello", Status: "pending", Source: "upload", CreatedAt: now, UpdatedAt: now}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api/v1/components", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []api.Component{hello})
	})
	mux.HandleFunc("GET /api/v1/components/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != "hello" {
			reply(w, 404, api.Error{Error: `component "` + r.PathValue("name") + `" not found`})
			return
		}
		reply(w, 200, hello)
	})
	mux.HandleFunc("POST /api/v1/components/{name}/deployments", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 202, dep)
	})
	mux.HandleFunc("GET /api/v1/components/{name}/deployments", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []api.Deployment{dep, *hello.Live})
	})
	mux.HandleFunc("GET /api/v1/deployments/{id}", func(w http.ResponseWriter, r *http.Request) {
		d := dep
		d.BuildLog = "step 1\nstep 2\n"
		reply(w, 200, d)
	})
	mux.HandleFunc("POST /api/v1/components/{name}/pause", func(w http.ResponseWriter, r *http.Request) {
		c := hello
		c.Paused, c.Status = true, "paused"
		reply(w, 200, c)
	})
	mux.HandleFunc("POST /api/v1/components/{name}/resume", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, hello)
	})
	mux.HandleFunc("POST /api/v1/components/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 202, api.Deployment{ID: 5, Component: "hello", Status: "ready"})
	})
	mux.HandleFunc("GET /api/v1/components/{name}/stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.Stats{Component: "hello", Since: r.URL.Query().Get("since"), Hits: 3, Errors: 1,
			Buckets: []api.Bucket{{Minute: now, Hits: 3, Errors: 1, P50ms: 1.5, P99ms: 9}}})
	})
	mux.HandleFunc("GET /api/v1/components/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, []api.LogLine{{ID: 1, Time: now, Deployment: 7, Stream: "stdout", Line: "hi"}})
	})
	mux.HandleFunc("DELETE /api/v1/components/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			reply(w, 401, api.Error{Error: "missing or invalid API token"})
			return
		}
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, request{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type"), string(body)})
		mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	requests := func() []request {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}
	return client.New(srv.URL+"/", token, srv.Client()), requests
}

func TestMethods(t *testing.T) {
	ctx := t.Context()
	c, seen := fakeAPI(t)
	tests := []struct {
		name  string
		call  func() (any, error)
		want  request
		check func(t *testing.T, got any)
	}{
		{"Components", func() (any, error) { return c.Components(ctx) },
			request{Method: "GET", Path: "/api/v1/components"},
			func(t *testing.T, got any) {
				cs := got.([]api.Component)
				if len(cs) != 1 || cs[0].Name != "hello" || cs[0].Live.ID != 7 || cs[0].Instances[0].Worker != "w1" {
					t.Errorf("got %+v", cs)
				}
			}},
		{"Component", func() (any, error) { return c.Component(ctx, "hello") },
			request{Method: "GET", Path: "/api/v1/components/hello"},
			func(t *testing.T, got any) {
				if got.(api.Component).URL != "http://x/fn/hello" {
					t.Errorf("got %+v", got)
				}
			}},
		{"Deploy", func() (any, error) { return c.Deploy(ctx, "hello", strings.NewReader("GZIP")) },
			request{Method: "POST", Path: "/api/v1/components/hello/deployments", ContentType: "application/gzip", Body: "GZIP"},
			func(t *testing.T, got any) {
				if d := got.(api.Deployment); d.ID != 8 || d.Status != "pending" {
					t.Errorf("got %+v", d)
				}
			}},
		{"Deployments", func() (any, error) { return c.Deployments(ctx, "hello") },
			request{Method: "GET", Path: "/api/v1/components/hello/deployments"},
			func(t *testing.T, got any) {
				if ds := got.([]api.Deployment); len(ds) != 2 || ds[1].ID != 7 {
					t.Errorf("got %+v", ds)
				}
			}},
		{"Deployment", func() (any, error) { return c.Deployment(ctx, 8) },
			request{Method: "GET", Path: "/api/v1/deployments/8"},
			func(t *testing.T, got any) {
				if d := got.(api.Deployment); d.BuildLog != "step 1\nstep 2\n" {
					t.Errorf("got %+v", d)
				}
			}},
		{"Pause", func() (any, error) { return c.Pause(ctx, "hello") },
			request{Method: "POST", Path: "/api/v1/components/hello/pause"},
			func(t *testing.T, got any) {
				if !got.(api.Component).Paused {
					t.Errorf("got %+v", got)
				}
			}},
		{"Resume", func() (any, error) { return c.Resume(ctx, "hello") },
			request{Method: "POST", Path: "/api/v1/components/hello/resume"},
			func(t *testing.T, got any) {
				if got.(api.Component).Paused {
					t.Errorf("got %+v", got)
				}
			}},
		{"Rollback", func() (any, error) { return c.Rollback(ctx, "hello", 5) },
			request{Method: "POST", Path: "/api/v1/components/hello/rollback", ContentType: "application/json", Body: `{"deployment":5}`},
			func(t *testing.T, got any) {
				if got.(api.Deployment).ID != 5 {
					t.Errorf("got %+v", got)
				}
			}},
		{"RollbackPrevious", func() (any, error) { return c.Rollback(ctx, "hello", 0) },
			request{Method: "POST", Path: "/api/v1/components/hello/rollback", ContentType: "application/json", Body: `{}`},
			func(t *testing.T, got any) {}},
		{"Stats", func() (any, error) { return c.Stats(ctx, "hello", "2h") },
			request{Method: "GET", Path: "/api/v1/components/hello/stats", Query: "since=2h"},
			func(t *testing.T, got any) {
				s := got.(api.Stats)
				if s.Since != "2h" || s.Hits != 3 || len(s.Buckets) != 1 || s.Buckets[0].P99ms != 9 {
					t.Errorf("got %+v", s)
				}
			}},
		{"Logs", func() (any, error) { return c.Logs(ctx, "hello", 50) },
			request{Method: "GET", Path: "/api/v1/components/hello/logs", Query: "tail=50"},
			func(t *testing.T, got any) {
				if ls := got.([]api.LogLine); len(ls) != 1 || ls[0].Line != "hi" || ls[0].Stream != "stdout" {
					t.Errorf("got %+v", ls)
				}
			}},
		{"Delete", func() (any, error) { return nil, c.Delete(ctx, "hello") },
			request{Method: "DELETE", Path: "/api/v1/components/hello"},
			func(t *testing.T, got any) {}},
		{"EscapedName", func() (any, error) { return c.Pause(ctx, "a/b c") },
			request{Method: "POST", Path: "/api/v1/components/a%2Fb%20c/pause"},
			func(t *testing.T, got any) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen()
			got, err := tt.call()
			if err != nil {
				t.Fatal(err)
			}
			if reqs := seen(); len(reqs) != 1 || reqs[0] != tt.want {
				t.Fatalf("requests = %+v, want %+v", reqs, tt.want)
			}
			tt.check(t, got)
		})
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"json", 400, `{"error":"velo.toml: unknown key \"prot\""}` + "\n", `velo.toml: unknown key "prot"`},
		{"plain text", 503, "component hello is paused\n", "component hello is paused"},
		{"empty", 502, "", "502 Bad Gateway"},
		{"html", 500, "<html><body>oops</body></html>", "500 Internal Server Error"},
		{"json without error", 409, `{"message":"x"}`, "409 Conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			_, err := client.New(srv.URL, token, nil).Component(t.Context(), "hello")
			var apiErr *client.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %#v, want *client.Error", err)
			}
			if apiErr.Status != tt.status || apiErr.Message != tt.want || err.Error() != tt.want {
				t.Errorf("err = %+v (%q), want status %d message %q", apiErr, err, tt.status, tt.want)
			}
		})
	}
}

func TestUnauthorized(t *testing.T) {
	c, _ := fakeAPI(t)
	bad := client.New(c.Server(), "wrong", nil)
	err := bad.Delete(t.Context(), "hello")
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || err.Error() != "missing or invalid API token" {
		t.Fatalf("err = %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := "http://" + ln.Addr().String()
	ln.Close()
	_, err = client.New(server, token, nil).Components(t.Context())
	want := `cannot reach Velo at ` + server + ` (is "velo up" running?)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("err = %#v, want *UnreachableError wrapping ECONNREFUSED", err)
	}
}

func TestCanceled(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := client.New(srv.URL, token, nil).Components(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestBadJSON(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "[{")
	}))
	defer srv.Close()
	_, err := client.New(srv.URL, token, nil).Components(t.Context())
	if err == nil || !strings.Contains(err.Error(), "decode GET /api/v1/components") {
		t.Fatalf("err = %v", err)
	}
}
