package router

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"golang.org/x/net/http/httpguts"

	"github.com/velo-run/velo/internal/auth"
)

// The HTTP/1.1 heads crossing the router are parsed here, once, for every
// path: request heads by parseRequestHead (the event loops, the goroutine
// fast path and the screen in front of net/http), answer heads by
// answer.parse (the event loops, the goroutine fast path and Remote). Both
// follow RFC 9112 and refuse what it lets a recipient refuse, so that a
// head never means one thing to Velo and another to the next hop; where
// net/http accepts more, the fuzz tests (http1_test.go) name the case.

// nextLine returns the line at the start of buf without its CRLF and the
// rest. ok is false while buf holds no whole line; a line ending in a bare
// LF is an error at once (RFC 9112 2.2 allows accepting it; Velo refuses
// it rather than wait for a CRLF CRLF that may never come).
func nextLine(buf []byte) (line, rest []byte, ok bool, err error) {
	i := bytes.IndexByte(buf, '\n')
	if i < 0 {
		return nil, nil, false, nil
	}
	if i == 0 || buf[i-1] != '\r' {
		return nil, nil, false, errors.New("line ends in a bare LF")
	}
	return buf[:i-1], buf[i+1:], true, nil
}

// field splits a header line into name and value (OWS trimmed) and checks
// both: the name a token right before the colon (no whitespace, no
// obs-fold), the value free of control characters but HTAB (a bare CR
// included).
func field(line []byte) (name, value []byte, err error) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return nil, nil, fmt.Errorf("malformed header line %q", line)
	}
	value = bytes.Trim(line[colon+1:], " \t")
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, fmt.Errorf("invalid character in header %s", line[:colon])
		}
	}
	return line[:colon], value, nil
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) { // RFC 9110 tchar
			return false
		}
	}
	return len(b) > 0
}

// contentLength parses a Content-Length value: 1*DIGIT, nothing else (no
// sign, no inner space), at most 18 digits.
func contentLength(v []byte) (int64, error) {
	if len(v) == 0 || len(v) > 18 {
		return 0, fmt.Errorf("bad Content-Length %q", v)
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad Content-Length %q", v)
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

func is(name []byte, canonical string) bool { return bytes.EqualFold(name, []byte(canonical)) }

// parseRequestHead parses the request head at the start of buf into r,
// whose slices point into buf (or r.scratch). It returns the head's length,
// 0 while buf holds no whole head, or an error naming why the request is
// malformed: it is answered 400 and its connection closed.
//
// Stricter than net/http, on purpose: a bare LF, HTTP versions other than
// 1.0 and 1.1, Content-Length with Transfer-Encoding (RFC 9112 6.1 lets a
// server frame by TE; nginx refuses, so does Velo: a proxy that frames
// differently from the next hop is how requests are smuggled), more than
// one Content-Length or Transfer-Encoding line, any transfer coding but
// chunked, Transfer-Encoding in HTTP/1.0.
func parseRequestHead(r *fastReq, buf []byte) (int, error) {
	line, rest, ok, err := nextLine(buf)
	if !ok {
		return 0, err
	}
	*r = fastReq{length: -1, lines: r.lines[:0], scratch: r.scratch[:0], gated: r.gated[:0]}
	m, after, _ := bytes.Cut(line, []byte(" "))
	uri, proto, _ := bytes.Cut(after, []byte(" "))
	if !isToken(m) || len(uri) == 0 {
		return 0, fmt.Errorf("malformed request line %q", line)
	}
	for _, c := range uri {
		if c <= ' ' || c >= 0x7f {
			return 0, fmt.Errorf("malformed request line %q", line)
		}
	}
	if !validTarget(m, uri) {
		return 0, fmt.Errorf("malformed request line %q", line)
	}
	switch string(proto) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		r.http10 = true
	default:
		return 0, fmt.Errorf("malformed request line %q", line)
	}
	r.method, r.uri = m, uri
	hosts, tes := 0, 0
	for {
		line, rest, ok, err = nextLine(rest)
		if !ok {
			return 0, err
		}
		if len(line) == 0 {
			break
		}
		name, value, err := field(line)
		if err != nil {
			return 0, err
		}
		switch {
		case is(name, "Host"):
			hosts++
			r.host = value
			continue
		case is(name, "Content-Length"):
			if r.length >= 0 {
				return 0, errors.New("more than one Content-Length")
			}
			n, err := contentLength(value)
			if err != nil {
				return 0, err
			}
			r.length = n
			continue
		case is(name, "Transfer-Encoding"):
			if r.http10 {
				// Whatever its value (net/http ignores it there).
				return 0, errors.New("Transfer-Encoding in an HTTP/1.0 request")
			}
			if tes++; tes > 1 || !bytes.EqualFold(value, []byte("chunked")) {
				return 0, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			r.chunked = true
			continue
		case is(name, "Upgrade"):
			r.special, r.upgrade = true, true
		case is(name, "Expect"), is(name, "Te"), is(name, "Trailer"), is(name, "Prefer"):
			// Prefer: respond-async calls are queued by ServeHTTP.
			r.special = true
		case is(name, "Connection"):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				r.close = true
			case bytes.EqualFold(value, []byte("keep-alive")):
			default:
				r.special = true // fields named as hop-by-hop
			}
			continue
		case is(name, "Keep-Alive"), is(name, "Proxy-Connection"), is(name, "Proxy-Authorization"):
			continue
		case is(name, "Authorization"):
			r.special = r.special || r.auth != nil
			r.auth = value
			continue
		case is(name, HeaderAPIKey):
			// Kept aside: a private component's gate takes it out, a
			// public one gets it back (appendUpstream).
			r.special = r.special || r.apiKey != nil
			r.apiKey = value
			continue
		case is(name, "X-Forwarded-For"):
			r.special = r.special || r.xff != nil
			r.xff = value
			continue
		case is(name, "X-Forwarded-Proto"):
			r.special = r.special || r.xfp != nil
			r.xfp = value
			continue
		case len(name) > 7 && is(name[:7], "X-Velo-"):
			continue // the router's own headers: set by the router only
		case is(name, "Cookie"):
			// Velo's own cookies never reach a component.
			if hasVeloCookie(value) {
				start := len(r.scratch)
				r.scratch = appendCookies(append(r.scratch, "Cookie: "...), value)
				if len(r.scratch) == start+len("Cookie: ") {
					r.scratch = r.scratch[:start]
					continue
				}
				line = r.scratch[start:]
			}
		}
		r.lines = append(r.lines, line)
	}
	switch {
	case r.chunked && r.length >= 0:
		return 0, errors.New("both Content-Length and Transfer-Encoding")
	case hosts > 1, hosts == 0 && !r.http10:
		return 0, errors.New("a request needs one Host header")
	case hosts == 1 && !httpguts.ValidHostHeader(string(r.host)):
		return 0, fmt.Errorf("invalid Host %q", r.host)
	}
	r.head = buf[:len(buf)-len(rest)]
	return len(r.head), nil
}

// hasVeloCookie reports whether a Cookie value holds one of Velo's own
// cookies (auth.VeloCookie).
func hasVeloCookie(value []byte) bool {
	for pair := range bytes.SplitSeq(value, []byte(";")) {
		name, _, _ := bytes.Cut(pair, []byte("="))
		if auth.VeloCookie(string(bytes.Trim(name, " \t"))) {
			return true
		}
	}
	return false
}

// appendCookies appends the cookie-pairs of a Cookie value but Velo's own,
// "; "-separated.
func appendCookies(dst, value []byte) []byte {
	n := len(dst)
	for pair := range bytes.SplitSeq(value, []byte(";")) {
		pair = bytes.Trim(pair, " \t")
		name, _, _ := bytes.Cut(pair, []byte("="))
		if len(pair) == 0 || auth.VeloCookie(string(bytes.TrimRight(name, " \t"))) {
			continue
		}
		if len(dst) > n {
			dst = append(dst, "; "...)
		}
		dst = append(dst, pair...)
	}
	return dst
}

// stripVeloCookies removes Velo's own cookies from a request's header.
func stripVeloCookies(h http.Header) {
	vs := h["Cookie"]
	for i := 0; i < len(vs); i++ {
		if v := []byte(vs[i]); hasVeloCookie(v) {
			if kept := appendCookies(nil, v); len(kept) > 0 {
				vs[i] = string(kept)
			} else {
				vs = slices.Delete(vs, i, i+1)
				i--
			}
		}
	}
	if len(vs) == 0 {
		delete(h, "Cookie")
	} else {
		h["Cookie"] = vs
	}
}

// stripVeloSetCookies drops a component's Set-Cookie of Velo's own cookies
// from an answer's header.
func stripVeloSetCookies(h http.Header) {
	if vs, ok := h["Set-Cookie"]; ok {
		vs = slices.DeleteFunc(vs, func(v string) bool { return setsVeloCookie([]byte(v)) })
		if len(vs) == 0 {
			delete(h, "Set-Cookie")
		} else {
			h["Set-Cookie"] = vs
		}
	}
}

// setsVeloCookie reports whether a Set-Cookie value sets one of Velo's own
// cookies.
func setsVeloCookie(value []byte) bool {
	name, _, _ := bytes.Cut(value, []byte("="))
	return auth.VeloCookie(string(bytes.Trim(name, " \t")))
}

// answer is the head of a worker's answer, parsed in place where it lies
// in the read buffer: the header lines to pass on are kept as slices,
// written to the client as they are, and the head is dropped from the
// buffer only then (headLen bytes).
type answer struct {
	res     response
	status  []byte // code and reason as the worker sent them
	lines   [][]byte
	headLen int
}

// parse parses the answer head at the start of buf, the answer to a
// request with method. It returns false while buf holds no whole head,
// interim true for a 1xx answer to drop (headLen bytes) before the next.
// An error means the worker's answer is malformed: 502, never passed on.
//
// Stricter than net/http's ReadResponse: a bare LF, versions other than
// HTTP/1.0 and 1.1, Content-Length with Transfer-Encoding (net/http frames
// by TE), transfer codings other than chunked, Transfer-Encoding in an
// HTTP/1.0 answer, and Velo's own cookies in Set-Cookie are refused or
// dropped.
func (a *answer) parse(buf, method []byte) (done, interim bool, err error) {
	line, rest, ok, err := nextLine(buf)
	if !ok {
		return false, false, err
	}
	res := &a.res
	*res = response{length: -1}
	a.lines = a.lines[:0]
	if len(line) < 12 || (!bytes.HasPrefix(line, []byte("HTTP/1.1 ")) && !bytes.HasPrefix(line, []byte("HTTP/1.0 "))) ||
		(len(line) > 12 && line[12] != ' ') {
		return false, false, fmt.Errorf("malformed status line %q", line)
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return false, false, fmt.Errorf("malformed status line %q", line)
		}
		res.status = res.status*10 + int(c-'0')
	}
	if res.status < 100 {
		return false, false, fmt.Errorf("malformed status line %q", line)
	}
	for _, c := range line[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false, false, fmt.Errorf("malformed status line %q", line)
		}
	}
	res.keepAlive = line[7] == '1'
	a.status = line[9:]
	var hop [][]byte
	for {
		line, rest, ok, err = nextLine(rest)
		if !ok {
			return false, false, err
		}
		if len(line) == 0 {
			break
		}
		name, value, err := field(line)
		if err != nil {
			return false, false, err
		}
		switch {
		case is(name, "Content-Length"):
			n, err := contentLength(value)
			if err != nil {
				return false, false, err
			}
			if res.length >= 0 && n != res.length {
				return false, false, errors.New("two different Content-Lengths")
			}
			res.length = n
			continue
		case is(name, "Transfer-Encoding"):
			if buf[7] == '0' {
				// HTTP/1.0, whatever its value (net/http ignores it there).
				return false, false, errors.New("Transfer-Encoding in an HTTP/1.0 answer")
			}
			if res.chunked || !bytes.EqualFold(value, []byte("chunked")) {
				return false, false, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			res.chunked = true
			continue
		case is(name, "Connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				switch tok = bytes.Trim(tok, " \t"); {
				case bytes.EqualFold(tok, []byte("close")):
					res.keepAlive = false
				case bytes.EqualFold(tok, []byte("keep-alive")):
					res.keepAlive = true
				case len(tok) > 0:
					hop = append(hop, tok)
				}
			}
			continue
		case is(name, "Keep-Alive"), is(name, "Proxy-Connection"), is(name, "Te"), is(name, "Trailer"),
			is(name, "Upgrade"), is(name, "Proxy-Authenticate"), is(name, "X-Velo-Deployment"), is(name, "X-Velo-Worker"):
			continue
		case is(name, "Set-Cookie"):
			if setsVeloCookie(value) {
				continue // a component never sets Velo's own cookies
			}
		case is(name, HeaderNotServed):
			res.notServed = true
		}
		a.lines = append(a.lines, line)
	}
	a.headLen = len(buf) - len(rest)
	if res.chunked && res.length >= 0 {
		return false, false, errors.New("both Content-Length and Transfer-Encoding")
	}
	if len(hop) > 0 {
		a.lines = slices.DeleteFunc(a.lines, func(l []byte) bool {
			name, _, _ := bytes.Cut(l, []byte(":"))
			return slices.ContainsFunc(hop, func(h []byte) bool { return bytes.EqualFold(name, h) })
		})
	}
	if res.status >= 100 && res.status < 200 {
		if res.status == http.StatusSwitchingProtocols {
			return false, false, errors.New("protocol upgrades are not forwarded")
		}
		return true, true, nil
	}
	if bytes.Equal(method, []byte("HEAD")) || res.status == http.StatusNoContent || res.status == http.StatusNotModified {
		res.noBody = true
	}
	if !res.noBody && !res.chunked && res.length < 0 {
		res.keepAlive = false // the body runs to the end of the connection
	}
	return true, false, nil
}

// read reads and parses the head of a worker's answer from br, leaving it
// in br's buffer (see answer), 1xx interim answers skipped.
func (a *answer) read(br *bufio.Reader, method []byte) (*response, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		done, interim, err := a.parse(buf, method)
		switch {
		case err != nil:
			return nil, err
		case interim:
			if _, err := br.Discard(a.headLen); err != nil {
				return nil, err
			}
			continue
		case done:
			return &a.res, nil
		case len(buf) >= br.Size():
			return nil, errors.New("answer head too long")
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
	}
}

// validTarget checks a request-target as net/http will parse it: an
// origin-form path's escapes; any other form through url.ParseRequestURI.
func validTarget(method, uri []byte) bool {
	if uri[0] != '/' {
		raw := string(uri)
		if string(method) == "CONNECT" {
			raw = "http://" + raw
		}
		_, err := url.ParseRequestURI(raw)
		return err == nil
	}
	path, _, _ := bytes.Cut(uri, []byte("?"))
	for i := bytes.IndexByte(path, '%'); i >= 0; i = bytes.IndexByte(path, '%') {
		if i+2 >= len(path) || !ishex(path[i+1]) || !ishex(path[i+2]) {
			return false
		}
		path = path[i+3:]
	}
	return true
}

func ishex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
