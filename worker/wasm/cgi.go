package wasm

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"
)

// parseCGI splits a module's stdout into a CGI response (RFC 3875 §6):
// header lines, each ended by "\n" or "\r\n", a blank line, then the body.
//
// It adds the response headers to h (repeated headers stay repeated) and
// returns the status and the body, which aliases out. "Status: 404 Not
// Found" sets the status and is not passed on; "Location" without a Status
// means 302; otherwise the status is 200. Content-Length and hop-by-hop
// headers from the module are dropped: the server frames the body itself.
//
// As in WAGI and Spin's WAGI executor, a header line without a colon, or
// whose name is not a valid field name, is skipped rather than failing the
// answer: skip (when not nil) gets each such line, for the logs. A head of
// nothing but such lines is still an error.
//
// Output that is not a header block followed by a blank line is an error,
// and then h is left untouched.
func parseCGI(out []byte, h http.Header, skip func(line []byte)) (status int, body []byte, err error) {
	if len(out) == 0 {
		return 0, nil, errors.New("no output")
	}
	// First pass: find the end of the header block and check every line,
	// so that h is only touched when the whole block is valid.
	headerEnd, bodyStart := -1, 0
	lines, skipped, hasLocation := 0, 0, false
	for pos := 0; pos < len(out); {
		nl := bytes.IndexByte(out[pos:], '\n')
		if nl < 0 {
			if lines == 0 {
				return 0, nil, errors.New("no CGI header block")
			}
			return 0, nil, errors.New("header block not ended by a blank line")
		}
		line := trimCR(out[pos : pos+nl])
		next := pos + nl + 1
		if len(line) == 0 {
			headerEnd, bodyStart = pos, next
			break
		}
		name, value, ok := splitHeader(line)
		if !ok {
			if !skippable(line) {
				return 0, nil, fmt.Errorf("bad CGI header line %q", clip(line))
			}
			skipped++
			pos = next
			continue
		}
		switch {
		case equalFold(name, "Status"):
			s, ok := parseStatus(value)
			if !ok {
				return 0, nil, fmt.Errorf("bad CGI status %q", clip(value))
			}
			status = s
		case equalFold(name, "Location"):
			hasLocation = true
		}
		lines++
		pos = next
	}
	if headerEnd < 0 {
		return 0, nil, errors.New("header block not ended by a blank line")
	}
	if lines == 0 && skipped > 0 {
		return 0, nil, fmt.Errorf("no valid CGI header line (the first is %q)", clip(firstLine(out)))
	}
	if lines == 0 {
		return 0, nil, errors.New("empty CGI header block")
	}
	if status == 0 {
		status = http.StatusOK
		if hasLocation {
			status = http.StatusFound
		}
	}

	// Second pass: add the headers. Their names and values are cut from
	// one string of the whole block (offsets in out are cap(out)-cap(b):
	// every line is a reslice of out) and their values share one slice,
	// each with room for its own value only: two allocations for the head,
	// not two or three a line.
	head := string(out[:headerEnd])
	at := func(b []byte) string { i := cap(out) - cap(b); return head[i : i+len(b)] }
	vals := make([]string, lines)
	n := 0
	for pos := 0; pos < headerEnd; {
		nl := bytes.IndexByte(out[pos:], '\n')
		line := trimCR(out[pos : pos+nl])
		pos += nl + 1
		name, value, ok := splitHeader(line)
		if !ok {
			if skip != nil {
				skip(line)
			}
			continue
		}
		if equalFold(name, "Status") || dropped(name) {
			continue
		}
		key, v := textproto.CanonicalMIMEHeaderKey(at(name)), at(value)
		if old, ok := h[key]; ok {
			h[key] = append(old, v) // repeated: a slice of its own
		} else {
			vals[n] = v
			h[key] = vals[n : n+1 : n+1]
			n++
		}
	}
	return status, out[bodyStart:], nil
}

// splitHeader splits "Name: value", trimming blanks around the value, and
// reports whether the line is a valid header field.
func splitHeader(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	name, value = line[:colon], line[colon+1:]
	for i := 0; i < len(name); i++ {
		if !httpguts.IsTokenRune(rune(name[i])) { // RFC 9110 tchar
			return nil, nil, false
		}
	}
	value = trimBlanks(value)
	for i := 0; i < len(value); i++ {
		// Field values may hold visible characters, blanks and obs-text,
		// never other control characters.
		if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

// skippable reports whether a bad header line is one WAGI and Spin skip: no
// colon at all, or a name that is not a field name. A line whose value
// holds control characters is still an error (both fail on it too).
func skippable(line []byte) bool {
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return true
	}
	_, value, _ := bytes.Cut(line, []byte(":"))
	for _, c := range trimBlanks(value) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func firstLine(b []byte) []byte {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return trimCR(line)
}

// parseStatus reads "404" or "404 Not Found".
func parseStatus(v []byte) (int, bool) {
	if len(v) < 3 || len(v) > 3 && v[3] != ' ' {
		return 0, false
	}
	n := 0
	for _, c := range v[:3] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	// 1xx are interim responses of the server's own connection handling,
	// never a program's final answer.
	if n < 200 || n > 599 {
		return 0, false
	}
	return n, true
}

// bodyAllowed reports whether a response with status may carry a body.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// dropped reports whether a module's header is one the server owns.
func dropped(name []byte) bool {
	for _, d := range [...]string{"Content-Length", "Connection", "Keep-Alive",
		"Transfer-Encoding", "Trailer", "Upgrade", "Proxy-Connection"} {
		if equalFold(name, d) {
			return true
		}
	}
	return false
}

// equalFold is an ASCII case-insensitive comparison that does not allocate.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

func trimBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// clip shortens b for an error message.
func clip(b []byte) []byte {
	const max = 80
	if len(b) > max {
		return b[:max]
	}
	return b
}
