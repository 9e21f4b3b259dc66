package wasm

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestParseCGI(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		status  int
		header  http.Header
		body    string
		err     string   // substring; "" means success
		skipped []string // lines skipped
	}{
		{name: "minimal", out: "Content-Type: text/plain\n\nhi", status: 200,
			header: http.Header{"Content-Type": {"text/plain"}}, body: "hi"},
		{name: "crlf", out: "Content-Type: text/plain\r\nX-A: 1\r\n\r\nhi\r\n", status: 200,
			header: http.Header{"Content-Type": {"text/plain"}, "X-A": {"1"}}, body: "hi\r\n"},
		{name: "mixed line ends", out: "X-A: 1\r\nX-B: 2\n\r\nbody", status: 200,
			header: http.Header{"X-A": {"1"}, "X-B": {"2"}}, body: "body"},
		{name: "empty body", out: "Content-Type: text/plain\n\n", status: 200,
			header: http.Header{"Content-Type": {"text/plain"}}, body: ""},
		{name: "body keeps blank lines", out: "X-A: 1\n\n\n\nx\n\n", status: 200,
			header: http.Header{"X-A": {"1"}}, body: "\n\nx\n\n"},
		{name: "status with reason", out: "Status: 404 Not Found\nContent-Type: text/plain\n\nno", status: 404,
			header: http.Header{"Content-Type": {"text/plain"}}, body: "no"},
		{name: "status code only", out: "status: 201\n\n", status: 201, header: http.Header{}},
		{name: "location means 302", out: "Location: /there\n\n", status: 302,
			header: http.Header{"Location": {"/there"}}},
		{name: "location with status", out: "Location: /there\nStatus: 301 Moved Permanently\n\n", status: 301,
			header: http.Header{"Location": {"/there"}}},
		{name: "repeated headers stay repeated", out: "Set-Cookie: a=1\nset-cookie: b=2\nX-Y: 1\n\n", status: 200,
			header: http.Header{"Set-Cookie": {"a=1", "b=2"}, "X-Y": {"1"}}},
		{name: "no content type is fine", out: "X-Only: yes\n\nraw", status: 200,
			header: http.Header{"X-Only": {"yes"}}, body: "raw"},
		{name: "values trimmed, inner blanks kept", out: "X-A: \t a  b \t\n\n", status: 200,
			header: http.Header{"X-A": {"a  b"}}},
		{name: "empty value", out: "X-Empty:\n\n", status: 200, header: http.Header{"X-Empty": {""}}},
		{name: "colon in value", out: "X-Time: 12:30:00\n\n", status: 200, header: http.Header{"X-Time": {"12:30:00"}}},
		{name: "framing headers dropped", out: "Content-Length: 99\nTransfer-Encoding: chunked\nConnection: close\nX-A: 1\n\nab", status: 200,
			header: http.Header{"X-A": {"1"}}, body: "ab"},
		{name: "utf-8 value", out: "X-Name: Zoë\n\n", status: 200, header: http.Header{"X-Name": {"Zoë"}}},
		// WAGI's and Spin's leniency: lines that are not "Name: value" are
		// skipped (and logged by the caller).
		{name: "line without colon skipped", out: "Content-Type: text/plain\nhello world\n\nbody", status: 200,
			header: http.Header{"Content-Type": {"text/plain"}}, body: "body", skipped: []string{"hello world"}},
		{name: "bad names skipped", out: "X A: 1\n: 2\nX-B: 3\n\n", status: 200,
			header: http.Header{"X-B": {"3"}}, skipped: []string{"X A: 1", ": 2"}},
		{name: "folded line skipped", out: "X-A: 1\n continued\n\n", status: 200,
			header: http.Header{"X-A": {"1"}}, skipped: []string{" continued"}},

		{name: "empty output", out: "", err: "no output"},
		{name: "garbage", out: "this is not a CGI response", err: "no CGI header block"},
		{name: "garbage line only", out: "hello world\n\nbody", err: `no valid CGI header line (the first is "hello world")`},
		{name: "no blank line", out: "Content-Type: text/plain\n", err: "not ended by a blank line"},
		{name: "no blank line, trailing text", out: "Content-Type: text/plain\nbody", err: "not ended by a blank line"},
		{name: "blank line first", out: "\nbody", err: "empty CGI header block"},
		{name: "bad names only", out: "X A: 1\n: 2\n\n", err: "no valid CGI header line"},
		{name: "control char in a bad name's value", out: "X A: a\x01\nX-B: 1\n\n", err: "bad CGI header line"},
		{name: "control char in value", out: "X-A: a\x00b\n\n", err: "bad CGI header line"},
		{name: "lone CR in value", out: "X-A: a\rb\n\n", err: "bad CGI header line"},
		{name: "bad status", out: "Status: abc\n\n", err: "bad CGI status"},
		{name: "status out of range", out: "Status: 999\n\n", err: "bad CGI status"},
		{name: "status too long", out: "Status: 2000\n\n", err: "bad CGI status"},
		{name: "status too short", out: "Status: 20\n\n", err: "bad CGI status"},
		{name: "interim status", out: "Status: 101 Switching Protocols\n\n", err: "bad CGI status"},
		{name: "no content", out: "Status: 204\n\n", status: 204, header: http.Header{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"X-Velo-Deployment": {"7"}} // set by the caller before
			var skipped []string
			status, body, err := parseCGI([]byte(tt.out), h, func(line []byte) { skipped = append(skipped, string(line)) })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				if len(h) != 1 {
					t.Errorf("header touched on error: %v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equal(skipped, tt.skipped) {
				t.Errorf("skipped %q, want %q", skipped, tt.skipped)
			}
			if status != tt.status {
				t.Errorf("status %d, want %d", status, tt.status)
			}
			if string(body) != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			if h.Get("X-Velo-Deployment") != "7" {
				t.Errorf("caller's header lost")
			}
			h.Del("X-Velo-Deployment")
			if len(h) != len(tt.header) {
				t.Errorf("header %v, want %v", h, tt.header)
			}
			for k, v := range tt.header {
				if !equal(h[k], v) {
					t.Errorf("header %s = %q, want %q", k, h[k], v)
				}
			}
		})
	}
}

// TestParseCGIAllocs: a head's names and values come from one string of
// it, the values share one slice: two allocations however many lines
// (the names here are canonical, as modules mostly write them), and a
// repeated header still gets all its values, in order, in a slice that
// does not spill into another header's.
func TestParseCGIAllocs(t *testing.T) {
	out := []byte("Content-Type: text/html\r\nCache-Control: max-age=60\r\nX-Frame-Options: DENY\r\nEtag: \"a1\"\r\n\r\n<p>hi</p>")
	h := make(http.Header, 8)
	allocs := testing.AllocsPerRun(100, func() {
		clear(h)
		if _, _, err := parseCGI(out, h, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("%v allocations for a head of 4 lines, want at most 2", allocs)
	}
	h = http.Header{}
	if _, _, err := parseCGI([]byte("Set-Cookie: a\nX-B: 1\nSet-Cookie: b\nX-C: 2\n\n"), h, nil); err != nil {
		t.Fatal(err)
	}
	h["Set-Cookie"] = append(h["Set-Cookie"], "c")
	if got := fmt.Sprint(h["Set-Cookie"], h["X-B"], h["X-C"]); got != "[a b c] [1] [2]" {
		t.Errorf("headers %s", got)
	}
	h["X-B"] = append(h["X-B"], "3")
	if got := fmt.Sprint(h["X-B"], h["X-C"]); got != "[1 3] [2]" {
		t.Errorf("after appending to X-B: %s", got)
	}
}

// FuzzParseCGI checks invariants on arbitrary module output: no panic, a
// valid status, a body that is a suffix of the output, headers only on
// success, and values that net/http can send.
func FuzzParseCGI(f *testing.F) {
	for _, s := range []string{
		"Content-Type: text/plain\n\nhi",
		"Status: 404 Not Found\r\nX-A: 1\r\n\r\nbody",
		"Location: /x\n\n",
		"Set-Cookie: a\nSet-Cookie: b\n\n",
		"garbage",
		"\n",
		"X: \x7f\n\n",
		"Status: 200\nStatus: 500 Oops\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		h := http.Header{}
		status, body, err := parseCGI(out, h, nil)
		if err != nil {
			if len(h) != 0 {
				t.Fatalf("header set on error %v: %v", err, h)
			}
			return
		}
		if status < 200 || status > 599 {
			t.Fatalf("status %d", status)
		}
		if !bytes.HasSuffix(out, body) {
			t.Fatalf("body %q is not a suffix of the output", body)
		}
		if len(h) == 0 && status == 200 {
			// A block of only dropped headers is allowed; it still had lines.
			if !bytes.Contains(out, []byte(":")) {
				t.Fatalf("success without any header line")
			}
		}
		for k, vs := range h {
			if k == "" || strings.ContainsAny(k, " \t\r\n:") {
				t.Fatalf("bad header name %q", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header %s has a bad value %q", k, v)
				}
			}
		}
		if h.Get("Status") != "" {
			t.Fatalf("Status passed through")
		}
	})
}

func TestLineWriter(t *testing.T) {
	long := strings.Repeat("x", maxLogLine)
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"lines", []string{"a\nb\n"}, []string{"stderr: a", "stderr: b"}},
		{"split across writes", []string{"he", "llo\nwor", "ld\n"}, []string{"stderr: hello", "stderr: world"}},
		{"partial last line flushed", []string{"a\nrest"}, []string{"stderr: a", "stderr: rest"}},
		{"crlf", []string{"a\r\nb\r\n"}, []string{"stderr: a", "stderr: b"}},
		{"empty lines kept", []string{"\n\nx\n"}, []string{"stderr: ", "stderr: ", "stderr: x"}},
		{"nothing", nil, nil},
		{"long line split", []string{long + "yz\n"}, []string{"stderr: " + long, "stderr: yz"}},
		{"long line across writes", []string{long[:100], long[100:] + "yz"}, []string{"stderr: " + long, "stderr: yz"}},
		{"line of exactly the cap", []string{long, "\n"}, []string{"stderr: " + long}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			var w lineWriter
			w.reset(s)
			for _, p := range tt.writes {
				if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.flush()
			if got := s.all(); !equal(got, tt.want) {
				t.Errorf("got %d lines %.200q, want %d %.200q", len(got), got, len(tt.want), tt.want)
			}
		})
	}
}

func TestLineWriterCapsLines(t *testing.T) {
	s := &sink{}
	var w lineWriter
	w.reset(s)
	for range maxLogLines + 50 {
		w.Write([]byte("line\n"))
	}
	w.Write([]byte("tail"))
	w.flush()
	got := s.all()
	if len(got) != maxLogLines+1 {
		t.Fatalf("%d lines, want %d", len(got), maxLogLines+1)
	}
	if last := got[len(got)-1]; last != "velo: "+truncateNotice {
		t.Errorf("last line %q", last)
	}
}

func TestLineWriterAllocatesOnlyWhenUsed(t *testing.T) {
	var w lineWriter
	allocs := testing.AllocsPerRun(100, func() {
		w.reset(discardSink{})
		w.flush()
	})
	if allocs != 0 {
		t.Errorf("%v allocations for a silent stderr", allocs)
	}
}

func TestSplitHostPort(t *testing.T) {
	for _, tt := range []struct{ in, host, port string }{
		{"example.com", "example.com", "80"},
		{"example.com:8080", "example.com", "8080"},
		{"[::1]:9", "::1", "9"},
		{"[::1]", "::1", "80"},
		{"", "", "80"},
		{"2001:db8::1", "2001:db8::1", "80"},
		{"192.0.2.7:4711", "192.0.2.7", "4711"},
		{"[2001:db8::2]:5555", "2001:db8::2", "5555"},
		{"example.com:", "example.com", ""},
	} {
		h, p := splitHostPort(tt.in, "80")
		if h != tt.host || p != tt.port {
			t.Errorf("splitHostPort(%q) = %q, %q; want %q, %q", tt.in, h, p, tt.host, tt.port)
		}
	}
}

func TestSubPath(t *testing.T) {
	for _, tt := range []struct{ path, mount, want string }{
		{"/fn/a/x/y", "/fn/a", "/x/y"},
		{"/fn/a", "/fn/a", ""},
		{"/fn/a/", "/fn/a", "/"},
		{"/x", "", "/x"},
		{"/other", "/fn/a", "/other"},
	} {
		if got := subPath(tt.path, tt.mount); got != tt.want {
			t.Errorf("subPath(%q, %q) = %q, want %q", tt.path, tt.mount, got, tt.want)
		}
	}
}

func TestHeaderEnv(t *testing.T) {
	rt := newRuntime(t, Config{})
	for _, tt := range []struct {
		key, want string
		ok        bool
	}{
		{"User-Agent", "HTTP_USER_AGENT", true},
		{"X-Custom-Thing", "HTTP_X_CUSTOM_THING", true},
		{"x-lower", "HTTP_X_LOWER", true},
		{"Authorization", "", false},
		{"Connection", "", false},
		{"Proxy-Authorization", "", false},
		{"authorization", "", false},
	} {
		got, ok := rt.headerEnv(tt.key)
		if got != tt.want || ok != tt.ok {
			t.Errorf("headerEnv(%q) = %q, %v; want %q, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
}
