package router

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// The differential fuzz tests feed the same bytes to Velo's head parsers
// and to net/http's (the reference): both accept with the same framing, or
// both refuse, or Velo refuses for one of the reasons below, each a case
// where net/http is more lenient than RFC 9112 lets a proxy safely be.
// The corpus is in testdata/fuzz; scripts/test.sh runs each target for a
// few seconds.

// stricterOnRequests are Velo's refusals of requests net/http's
// ReadRequest accepts.
var stricterOnRequests = []string{
	"line ends in a bare LF",                    // RFC 9112 2.2: MAY accept; a proxy should not
	"more than one Content-Length",              // net/http accepts repeats of one value
	"both Content-Length and Transfer-Encoding", // RFC 9112 6.1: net/http frames by TE
	"Transfer-Encoding in an HTTP/1.0 request",  // RFC 9112 6.1: net/http ignores TE there
	"a request needs one Host header",           // net/http's server checks it after ReadRequest
	"invalid Host",                              // likewise (httpguts.ValidHostHeader)
	"malformed request line",                    // versions but 1.0 and 1.1, targets outside visible ASCII
	"malformed header line",                     // obs-fold, which textproto unfolds (RFC 9112 5.2: reject)
	"bad Content-Length",                        // more than 18 digits
}

// stricterOnAnswers are Velo's refusals of answers net/http's
// ReadResponse accepts.
var stricterOnAnswers = []string{
	"line ends in a bare LF",
	"both Content-Length and Transfer-Encoding",
	"Transfer-Encoding in an HTTP/1.0 answer", // net/http ignores TE there, as in requests
	"malformed status line",                   // versions but 1.0 and 1.1, status under 100, control characters in the reason
	"malformed header line",                   // obs-fold, as in requests
	"protocol upgrades are not forwarded",
	"bad Content-Length",
}

func named(err error, reasons []string) bool {
	for _, r := range reasons {
		if strings.HasPrefix(err.Error(), r) {
			return true
		}
	}
	return false
}

func requestSeeds() []string {
	return []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /fn/a/b?q=1 HTTP/1.1\r\nHost: h:8080\r\nAuthorization: Basic x\r\nCookie: a=1; velo_session=2\r\n\r\n",
		"POST /fn/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		"POST /fn/a HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
		"POST /fn/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST /fn/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /fn/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
		"POST /fn/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\nHost: h\n\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\n 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
		"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	}
}

func FuzzRequestHead(f *testing.F) {
	for _, s := range requestSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r fastReq
		n, err := parseRequestHead(&r, data)
		br := bufio.NewReaderSize(bytes.NewReader(data), len(data)+16)
		req, herr := http.ReadRequest(br)
		switch {
		case err != nil && herr == nil && !named(err, stricterOnRequests):
			t.Fatalf("Velo refuses (%v), net/http accepts: %q", err, data)
		case err != nil || n == 0:
			// Refused, or no whole head yet (net/http then fails on EOF).
		case herr != nil:
			t.Fatalf("Velo accepts, net/http refuses (%v): %q", herr, data)
		default:
			chunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
			length := req.ContentLength
			if chunked {
				length = -1
			} else if r.length < 0 {
				length = -1 // absent: net/http says 0
				if req.ContentLength != 0 {
					t.Fatalf("no Content-Length, net/http says %d: %q", req.ContentLength, data)
				}
			}
			if consumed := len(data) - br.Buffered(); consumed != n {
				t.Fatalf("head of %d bytes, net/http read %d: %q", n, consumed, data)
			}
			if string(r.method) != req.Method || string(r.uri) != req.RequestURI || r.chunked != chunked || r.length != length {
				t.Fatalf("Velo: %s %s chunked %v length %d; net/http: %s %s chunked %v length %d: %q",
					r.method, r.uri, r.chunked, r.length, req.Method, req.RequestURI, chunked, length, data)
			}
			if r.uri[0] == '/' && string(r.host) != req.Host {
				t.Fatalf("Host %q, net/http %q: %q", r.host, req.Host, data)
			}
		}
	})
}

func FuzzAnswerHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.0 204 No Content\r\nConnection: keep-alive, x\r\nX: 1\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 302\r\nLocation: /x\r\nSet-Cookie: velo_session=1\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nuntil the end",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var a answer
		done, interim, err := a.parse(data, []byte("GET"))
		br := bufio.NewReaderSize(bytes.NewReader(data), len(data)+16)
		res, herr := http.ReadResponse(br, &http.Request{Method: "GET"})
		switch {
		case err != nil && herr == nil && !named(err, stricterOnAnswers):
			t.Fatalf("Velo refuses (%v), net/http accepts: %q", err, data)
		case err != nil || !done:
		case herr != nil:
			t.Fatalf("Velo accepts, net/http refuses (%v): %q", herr, data)
		case res.StatusCode != a.res.status:
			t.Fatalf("status %d, net/http %d: %q", a.res.status, res.StatusCode, data)
		case interim:
		default:
			chunked := len(res.TransferEncoding) == 1 && res.TransferEncoding[0] == "chunked"
			if a.res.noBody {
				break
			}
			if chunked != a.res.chunked || (!chunked && res.ContentLength != a.res.length) {
				t.Fatalf("chunked %v length %d, net/http chunked %v length %d: %q", a.res.chunked, a.res.length, chunked, res.ContentLength, data)
			}
			if consumed := len(data) - br.Buffered(); consumed != a.headLen {
				t.Fatalf("head of %d bytes, net/http read %d: %q", a.headLen, consumed, data)
			}
		}
	})
}

// TestIsTokenChar: the tchars are exactly the visible ASCII characters but
// the delimiters.
func TestIsTokenChar(t *testing.T) {
	for c := 0; c < 256; c++ {
		want := c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
		if got := isToken([]byte{byte(c)}); got != want {
			t.Errorf("isToken(%q) = %v, want %v", rune(c), got, want)
		}
	}
}
