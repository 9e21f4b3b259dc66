package worker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// echoInstance answers with what the component would see.
type echoInstance struct{}

func (echoInstance) Serve(w http.ResponseWriter, r *http.Request, mount string) {
	b, _ := io.ReadAll(r.Body)
	var invoke []string
	for k := range r.Header {
		if strings.HasPrefix(k, "X-Velo-") {
			invoke = append(invoke, k)
		}
	}
	fmt.Fprintf(w, "path=%s mount=%s auth=%q velo-headers=%v remote=%s body=%s", r.URL.Path, mount, r.Header.Get("Authorization"), invoke, r.RemoteAddr, b)
}

func (echoInstance) Close(context.Context) error { return nil }

// trackingBody records whether the handler read the request body.
type trackingBody struct {
	io.Reader
	read bool
}

func (t *trackingBody) Read(p []byte) (int, error) { t.read = true; return t.Reader.Read(p) }
func (t *trackingBody) Close() error               { return nil }

func TestHandler(t *testing.T) {
	w := &Worker{cfg: Config{Name: "w1"}, started: make(chan struct{})}
	w.markStarted()
	serving := map[int64]Instance{7: echoInstance{}}
	w.serving.Store(&serving)
	h := w.Handler("s3cret")

	call := func(hdr map[string]string, body string) (*httptest.ResponseRecorder, *trackingBody) {
		tb := &trackingBody{Reader: strings.NewReader(body)}
		req := httptest.NewRequest("POST", "/fn/hello/x", nil)
		req.Body = tb
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec, tb
	}
	ok := map[string]string{"Authorization": "Bearer s3cret", "X-Velo-Invoke-Deployment": "7", "X-Velo-Invoke-Mount": "/fn/hello", "X-Velo-Remote-Addr": "203.0.113.9"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range ok {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}

	for _, tc := range []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"no token", with("Authorization", ""), http.StatusUnauthorized},
		{"wrong token", with("Authorization", "Bearer s3cre"), http.StatusUnauthorized},
		{"token as basic", with("Authorization", "Basic s3cret"), http.StatusUnauthorized},
		{"no deployment", with("X-Velo-Invoke-Deployment", ""), http.StatusBadRequest},
		{"bad deployment", with("X-Velo-Invoke-Deployment", "seven"), http.StatusBadRequest},
	} {
		rec, tb := call(tc.hdr, "data")
		if rec.Code != tc.status || tb.read {
			t.Errorf("%s: %d (body read: %v), want %d", tc.name, rec.Code, tb.read, tc.status)
		}
	}
	// An empty cluster token refuses everything, even an empty bearer.
	if rec := httptest.NewRecorder(); true {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", "Bearer ")
		req.Header.Set("X-Velo-Invoke-Deployment", "7")
		w.Handler("").ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("empty token: %d", rec.Code)
		}
	}

	// Not served here: 421 with the marker, body untouched.
	rec, tb := call(with("X-Velo-Invoke-Deployment", "8"), "data")
	if rec.Code != http.StatusMisdirectedRequest || rec.Header().Get("X-Velo-Not-Served") != "8" || tb.read {
		t.Fatalf("not served: %d %v (body read: %v)", rec.Code, rec.Header(), tb.read)
	}

	// Served: the component sees the caller's Authorization (or none)
	// and no internal header.
	rec, _ = call(ok, "data")
	if want := `path=/fn/hello/x mount=/fn/hello auth="" velo-headers=[] remote=203.0.113.9:0 body=data`; rec.Code != 200 || rec.Body.String() != want {
		t.Fatalf("served: %d %q, want %q", rec.Code, rec.Body.String(), want)
	}
	rec, _ = call(with("X-Velo-Client-Authorization", "Basic dXNlcg=="), "data")
	if want := `path=/fn/hello/x mount=/fn/hello auth="Basic dXNlcg==" velo-headers=[] remote=203.0.113.9:0 body=data`; rec.Body.String() != want {
		t.Fatalf("client auth: %q, want %q", rec.Body.String(), want)
	}
}

// pageInstance answers n bytes, written in pieces.
type pageInstance struct{ n int }

func (p pageInstance) Serve(w http.ResponseWriter, r *http.Request, mount string) {
	body := strings.Repeat("x", p.n)
	for i := 0; i < len(body); i += 1000 {
		io.WriteString(w, body[i:min(i+1000, len(body))])
	}
}

func (pageInstance) Close(context.Context) error { return nil }

// TestHandlerHeadContentLength: the worker answers a router's HEAD with
// the Content-Length of what the component wrote (which the router passes
// on), past net/http's 2 KiB buffer too.
func TestHandlerHeadContentLength(t *testing.T) {
	w := &Worker{cfg: Config{Name: "w1"}, started: make(chan struct{})}
	w.markStarted()
	serving := map[int64]Instance{7: pageInstance{4000}}
	w.serving.Store(&serving)
	srv := httptest.NewServer(w.Handler("s3cret"))
	defer srv.Close()
	req, _ := http.NewRequest("HEAD", srv.URL+"/fn/hello/", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	req.Header.Set("X-Velo-Invoke-Deployment", "7")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.ContentLength != 4000 {
		t.Errorf("HEAD: %d, Content-Length %d, want 200 and 4000", res.StatusCode, res.ContentLength)
	}
}
