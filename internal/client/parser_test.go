package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/velo-run/velo/internal/api"
)

// event is one parser callback, recorded for comparison.
type event struct{ kind, a, b string }

func parseAll(t testing.TB, r io.Reader) ([]event, error) {
	var got []event
	p := parser{
		onID:    func(id string) { got = append(got, event{"id", id, ""}) },
		onRetry: func(d time.Duration) { got = append(got, event{"retry", d.String(), ""}) },
		onEvent: func(typ, data string) error {
			got = append(got, event{"event", typ, data})
			return nil
		},
	}
	err := p.parse(r)
	return got, err
}

func TestParser(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []event
	}{
		{"one event", "data: x\n\n", []event{{"event", "", "x"}}},
		{"multi-line data", "data: a\ndata:b\ndata:  c\n\n", []event{{"event", "", "a\nb\n c"}}},
		{"empty data line", "data\ndata\n\n", []event{{"event", "", "\n"}}},
		{"comments only", ": keepalive\n\n: keepalive\n\n", nil},
		{"id then data", "id: 7\ndata: x\n\n", []event{{"id", "7", ""}, {"event", "", "x"}}},
		{"id-only event", "id: 7\n\n", []event{{"id", "7", ""}}},
		{"id with NUL ignored", "id: a\x00b\ndata: x\n\n", []event{{"event", "", "x"}}},
		{"event type resets", "event: ping\ndata: 1\n\ndata: 2\n\n", []event{{"event", "ping", "1"}, {"event", "", "2"}}},
		{"retry", "retry: 250\nretry: soon\n", []event{{"retry", "250ms", ""}}},
		{"CRLF", "data: a\r\ndata: b\r\n\r\n", []event{{"event", "", "a\nb"}}},
		{"CR", "data: a\rdata: b\r\r", []event{{"event", "", "a\nb"}}},
		{"unknown field", "foo: bar\ndata: x\n\n", []event{{"event", "", "x"}}},
		{"trailing partial event dropped", "data: x\n\ndata: y\n", []event{{"event", "", "x"}}},
		{"no space after colon kept once", "data:  x \n\n", []event{{"event", "", " x "}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				got, err := parseAll(t, r)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want) {
					t.Errorf("events = %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestParserStopsOnEventError(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	p := parser{onEvent: func(string, string) error { n++; return boom }}
	if err := p.parse(strings.NewReader("data: 1\n\ndata: 2\n\n")); !errors.Is(err, boom) || n != 1 {
		t.Fatalf("err = %v after %d events", err, n)
	}
}

// FuzzParser checks that any byte stream parses without panic, the same
// whether read whole or byte by byte, and that no event appears without a
// blank line ending it.
func FuzzParser(f *testing.F) {
	f.Add("id: 1\ndata: {\"id\":1}\n\n: keepalive\n\n")
	f.Add("data: a\r\ndata: b\r\rretry: 10\n\n")
	f.Add("event: x\ndata\n\n\r\n\r")
	f.Fuzz(func(t *testing.T, in string) {
		whole, err1 := parseAll(t, strings.NewReader(in))
		bytewise, err2 := parseAll(t, iotest.OneByteReader(strings.NewReader(in)))
		if (err1 == nil) != (err2 == nil) || fmt.Sprint(whole) != fmt.Sprint(bytewise) {
			t.Fatalf("whole %q (%v) != byte by byte %q (%v)", whole, err1, bytewise, err2)
		}
		events := 0
		for _, e := range whole {
			if e.kind == "event" {
				events++
			}
		}
		blank := strings.Count(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace("\n"+in), "\n\n")
		if events > blank {
			t.Fatalf("%d events from %d blank lines", events, blank)
		}
	})
}

func TestFollowLogsReplacesIdleConnection(t *testing.T) {
	conns := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case conns <- r.Header.Get("Last-Event-ID"):
		default: // only the first two matter
		}
		w.Header().Set("Content-Type", "text/event-stream")
		if r.Header.Get("Last-Event-ID") == "" {
			io.WriteString(w, "retry: 1\nid: 1\ndata: {\"id\":1,\"line\":\"one\"}\n\n")
		} else {
			io.WriteString(w, "id: 2\ndata: {\"id\":2,\"line\":\"two\"}\n\n")
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then silence, not even a keepalive
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	f := &follower{c: New(srv.URL, "", nil), name: "hello", retry: defaultRetry, idle: 100 * time.Millisecond}
	var got []string
	f.fn = func(l api.LogLine) error {
		got = append(got, l.Line)
		if len(got) == 2 {
			cancel()
		}
		return nil
	}
	if err := f.run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if fmt.Sprint(got) != "[one two]" {
		t.Fatalf("lines = %v", got)
	}
	if first, second := <-conns, <-conns; first != "" || second != "1" {
		t.Errorf("Last-Event-ID = %q then %q, want none then 1", first, second)
	}
}
