package headlen

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHeadMatchesGet: through a real net/http server, a HEAD answer made
// with Writer carries the Content-Length of what its handler wrote (which
// net/http leaves out past its first 2 KiB buffer), the Content-Type net/http
// sniffs for the GET, the handler's own length, and none where there is no
// body or the handler flushed.
func TestHeadMatchesGet(t *testing.T) {
	page := func(n int) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			body := "<html>" + strings.Repeat("x", n-6)
			for i := 0; i < len(body); i += 1000 {
				io.WriteString(w, body[i:min(i+1000, len(body))])
			}
		}
	}
	for _, tc := range []struct {
		name   string
		h      func(w http.ResponseWriter, r *http.Request)
		length int64 // -1: none
		ctype  string
	}{
		{"small", page(100), 100, "text/html; charset=utf-8"},
		{"past net/http's buffer", page(4000), 4000, "text/html; charset=utf-8"},
		{"large", page(300 << 10), 300 << 10, "text/html; charset=utf-8"},
		{"empty", func(w http.ResponseWriter, r *http.Request) {}, 0, ""},
		{"declared", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "hello")
			if _, err := io.WriteString(w, "!"); err != http.ErrContentLength {
				panic("a write past Content-Length was taken")
			}
		}, 5, "text/plain"},
		{"no content", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
				panic("a body on 204 was taken")
			}
		}, -1, ""},
		{"flushed", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, strings.Repeat("y", 4000))
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			io.WriteString(w, "more")
		}, -1, "text/plain; charset=utf-8"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hw := New(w)
			tc.h(hw, r)
			hw.Finish()
		}))
		res, err := http.Head(srv.URL)
		srv.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		res.Body.Close()
		if res.ContentLength != tc.length || res.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("%s: HEAD Content-Length %d, Content-Type %q; want %d, %q",
				tc.name, res.ContentLength, res.Header.Get("Content-Type"), tc.length, tc.ctype)
		}
	}
}
