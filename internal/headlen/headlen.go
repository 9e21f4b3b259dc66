package headlen

import (
	"net/http"
	"strconv"
)

// sniffLen is how much of the body net/http reads to sniff a Content-Type
// (http.DetectContentType looks at no more).
const sniffLen = 512

// Writer is the http.ResponseWriter of a HEAD request's handler: what it
// writes is counted, not sent, and the head goes out at Finish with a
// Content-Length of the bytes written, unless the handler set one itself,
// flushed first (the head then went out without a length, as a GET's
// streamed answer has none) or answered with a status that has no body.
// Not safe for concurrent use, as no ResponseWriter is.
type Writer struct {
	w       http.ResponseWriter
	status  int    // 0 until the handler's first WriteHeader or Write
	sent    bool   // the head went to w
	written int64  // body bytes the handler wrote
	sniff   []byte // the body's first bytes, for net/http's Content-Type sniffing
}

// New wraps w, the writer of a HEAD request.
func New(w http.ResponseWriter) *Writer { return &Writer{w: w} }

// Header is the underlying writer's header map.
func (h *Writer) Header() http.Header { return h.w.Header() }

// WriteHeader records the status; informational ones (1xx) go out at once.
func (h *Writer) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		h.w.WriteHeader(code)
		return
	}
	if h.status == 0 {
		h.status = code
	}
}

// Write counts p. It fails as net/http's would on a status without a body
// or past a Content-Length the handler set.
func (h *Writer) Write(p []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	if !bodyAllowed(h.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if cl, ok := h.declared(); ok && h.written+int64(len(p)) > cl {
		return 0, http.ErrContentLength
	}
	h.written += int64(len(p))
	if !h.sent && len(h.sniff) < sniffLen {
		h.sniff = append(h.sniff, p[:min(len(p), sniffLen-len(h.sniff))]...)
	}
	return len(p), nil
}

// Flush sends the head now, without a length.
func (h *Writer) Flush() { _ = h.FlushError() }

// FlushError is Flush for http.ResponseController.
func (h *Writer) FlushError() error {
	h.send(false)
	return http.NewResponseController(h.w).Flush()
}

// Unwrap is the underlying writer, for http.ResponseController.
func (h *Writer) Unwrap() http.ResponseWriter { return h.w }

// Finish sends the head, with the length when it is known; call it once
// the handler has returned (not after it panicked).
func (h *Writer) Finish() { h.send(true) }

func (h *Writer) send(whole bool) {
	if h.sent {
		return
	}
	h.sent = true
	status := h.status
	if status == 0 {
		status = http.StatusOK
	}
	hdr := h.w.Header()
	if _, set := h.declared(); whole && !set && bodyAllowed(status) && hdr.Get("Transfer-Encoding") == "" {
		hdr.Set("Content-Length", strconv.FormatInt(h.written, 10))
	}
	h.w.WriteHeader(status)
	if len(h.sniff) > 0 {
		// net/http eats a HEAD's body but sniffs its Content-Type from it,
		// as for the GET.
		_, _ = h.w.Write(h.sniff)
	}
}

// declared is the Content-Length the handler set, if any.
func (h *Writer) declared() (int64, bool) {
	v := h.w.Header()["Content-Length"]
	if len(v) != 1 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	return n, err == nil && n >= 0
}

func bodyAllowed(status int) bool {
	return !(status >= 100 && status < 200 || status == http.StatusNoContent || status == http.StatusNotModified)
}
