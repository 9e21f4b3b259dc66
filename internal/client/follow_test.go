package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/client"
)

// sseServer answers each follow connection with the next script entry
// (a status and a raw body) and records the requests.
type sseServer struct {
	t       *testing.T
	mu      sync.Mutex
	scripts []func(w http.ResponseWriter, r *http.Request)
	reqs    []*http.Request
}

func (s *sseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.reqs)
	s.reqs = append(s.reqs, r.Clone(context.Background()))
	s.mu.Unlock()
	if n >= len(s.scripts) {
		<-r.Context().Done() // nothing more to say: hang until the client leaves
		return
	}
	s.scripts[n](w, r)
}

func (s *sseServer) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

// stream writes body as an event stream and ends the connection.
func stream(body string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		io.WriteString(w, body)
	}
}

func logEvent(id int64, line string) string {
	return fmt.Sprintf("id: %d\ndata: {\"id\":%d,\"deployment\":3,\"stream\":\"stdout\",\"line\":%q}\n\n", id, id, line)
}

func follow(t *testing.T, s *sseServer, stopAt int) ([]api.LogLine, error) {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var got []api.LogLine
	errStop := errors.New("enough")
	err := client.New(srv.URL, token, nil).FollowLogs(ctx, "hello", 10, func(l api.LogLine) error {
		got = append(got, l)
		if len(got) == stopAt {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return got, err
}

func lines(ls []api.LogLine) []string {
	var out []string
	for _, l := range ls {
		out = append(out, fmt.Sprintf("%d:%s", l.ID, l.Line))
	}
	return out
}

func TestFollowLogsParsesAndReconnects(t *testing.T) {
	s := &sseServer{t: t, scripts: []func(http.ResponseWriter, *http.Request){
		stream("retry: 5\n: keepalive\n\n" +
			logEvent(1, "one") +
			// one JSON value split over several data lines, CRLF line ends
			"id: 2\r\ndata: {\"id\":2,\r\ndata: \"line\":\"two\"}\r\n\r\n" +
			": keepalive\n\n" +
			"event: ping\ndata: {}\n\n" + // not a log line: ignored
			logEvent(3, "three")),
		// The server restarts: one refusal, then a stream that repeats line 3.
		func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		},
		stream(logEvent(3, "three again") + "id: 4\rdata: {\"id\":4,\"line\":\"four\"}\r\r" + "id: 5\ndata: {\"id\":5,\"line\":\"partial"),
		stream(logEvent(5, "five")),
	}}
	got, err := follow(t, s, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"1:one", "2:two", "3:three", "4:four", "5:five"}[:4]; fmt.Sprint(lines(got)) != fmt.Sprint(want) {
		t.Fatalf("lines = %v, want %v", lines(got), want)
	}
	reqs := s.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	if q := reqs[0].URL.Query(); q.Get("follow") != "1" || q.Get("tail") != "10" {
		t.Errorf("query = %v", q)
	}
	for i, want := range []string{"", "3", "3"} {
		if got := reqs[i].Header.Get("Last-Event-ID"); got != want {
			t.Errorf("request %d: Last-Event-ID = %q, want %q", i, got, want)
		}
		if got := reqs[i].Header.Get("Authorization"); got != "Bearer "+token {
			t.Errorf("request %d: Authorization = %q", i, got)
		}
		if got := reqs[i].Header.Get("Accept"); got != "text/event-stream" {
			t.Errorf("request %d: Accept = %q", i, got)
		}
	}
}

func TestFollowLogsPartialEventResumes(t *testing.T) {
	// A connection cut in the middle of an event drops that event; the
	// next connection resumes from the last complete one.
	s := &sseServer{t: t, scripts: []func(http.ResponseWriter, *http.Request){
		stream("retry: 1\n" + logEvent(1, "one") + "id: 2\ndata: {\"id\":2,"),
		stream(logEvent(2, "two")),
	}}
	got, err := follow(t, s, 2)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(lines(got)) != "[1:one 2:two]" {
		t.Fatalf("lines = %v", lines(got))
	}
	if id := s.requests()[1].Header.Get("Last-Event-ID"); id != "1" {
		t.Errorf("Last-Event-ID = %q, want 1", id)
	}
}

func TestFollowLogsStopsOnContext(t *testing.T) {
	s := &sseServer{t: t, scripts: []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, logEvent(1, "one"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		},
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	err := client.New(srv.URL, token, nil).FollowLogs(ctx, "hello", 0, func(l api.LogLine) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if q := s.requests()[0].URL.RawQuery; q != "follow=1" {
		t.Errorf("query = %q, want follow=1 only", q)
	}
}

func TestFollowLogsFatalErrors(t *testing.T) {
	tests := []struct {
		name    string
		scripts []func(http.ResponseWriter, *http.Request)
		want    string
	}{
		{"not found", []func(http.ResponseWriter, *http.Request){
			func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(404)
				io.WriteString(w, `{"error":"component \"hello\" not found"}`)
			}}, `component "hello" not found`},
		{"first connection 5xx", []func(http.ResponseWriter, *http.Request){
			func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }}, "500 Internal Server Error"},
		{"removed while following", []func(http.ResponseWriter, *http.Request){
			stream("retry: 1\n" + logEvent(1, "one")),
			func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(404)
				io.WriteString(w, `{"error":"gone"}`)
			}}, "gone"},
		{"not an event stream", []func(http.ResponseWriter, *http.Request){
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, "[]")
			}}, `follow logs of hello: server did not answer with an event stream (Content-Type "application/json")`},
		{"bad event", []func(http.ResponseWriter, *http.Request){
			stream("data: nope\n\n")}, "decode log event: invalid character 'o' in literal null (expecting 'u')"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := follow(t, &sseServer{t: t, scripts: tt.scripts}, 0)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %s", err, tt.want)
			}
		})
	}
}
