package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteResultsKeepsOtherSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	if err := writeResults(path, "h1", map[string]string{"a": "A1", "b": "B1"}, "a,b"); err != nil {
		t.Fatal(err)
	}
	// Someone else's section, added by hand after ours.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("\n<!-- section:z -->\nZ\n<!-- /section:z -->\n")
	f.Close()
	if err := writeResults(path, "h2", map[string]string{"a": "A2"}, "a,b"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	s := string(got)
	for _, want := range []string{"h2", "A2", "B1", "Z"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}
	for _, gone := range []string{"h1", "A1"} {
		if strings.Contains(s, gone) {
			t.Errorf("%q should have been replaced:\n%s", gone, s)
		}
	}
	if strings.Index(s, "A2") > strings.Index(s, "B1") || strings.Index(s, "B1") > strings.Index(s, "Z") {
		t.Errorf("sections moved:\n%s", s)
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://127.0.0.1:4000/fn/hello/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.88ms    1.23ms  20.00ms   80.00%
    Req/Sec     3.30k   200.00     3.60k    70.00%
  Latency Distribution
     50%  812.00us
     75%    5.50ms
     90%    6.50ms
     99%    1.02s
  32900 requests in 5.00s, 4.50MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   6580.25
Transfer/sec:    900.00KB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.rps != 6580.25 || r.requests != 32900 || r.non2xx != 5 || r.socketErrors != 3 {
		t.Errorf("got %+v", r)
	}
	if r.p50.Microseconds() != 812 || r.p99.Milliseconds() != 1020 {
		t.Errorf("latencies %v %v", r.p50, r.p99)
	}
}
