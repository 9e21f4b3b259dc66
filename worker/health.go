package worker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/velo-run/velo/internal/manifest"
)

// healthExcerpt is how much of a failing health check's body is quoted.
const healthExcerpt = 200

// HealthError is a failed health check: the last answer it got.
type HealthError struct {
	Check  manifest.Health
	Worker string
	Status int    // 0 when the check got no answer
	Body   string // an excerpt of the last answer's body
	Err    error  // why there was no answer, when Status is 0
}

func (e *HealthError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("health check %s failed on worker %s within %s: %v", e.Check, e.Worker, e.Check.Timeout, e.Err)
	}
	return fmt.Sprintf("health check %s failed on worker %s within %s: %d %s: %q",
		e.Check, e.Worker, e.Check.Timeout, e.Status, http.StatusText(e.Status), e.Body)
}

// checkHealth calls the instance's health path until it answers a status
// the check expects, trying again for the check's timeout. The call goes
// through the instance as a routed call would (admission, limits), from
// the worker itself.
func (w *Worker) checkHealth(ctx context.Context, inst Instance, h manifest.Health, blog io.Writer) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	herr := &HealthError{Check: h, Worker: w.cfg.Name}
	for tries := 1; ; tries++ {
		rec := &healthRecorder{header: http.Header{}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.Path, nil)
		if err != nil {
			return fmt.Errorf("health check %s: %w", h, err)
		}
		req.RemoteAddr = "127.0.0.1:0"
		req.Header.Set("User-Agent", "velo-health-check")
		inst.Serve(rec, req, "")
		if rec.status == 0 && rec.body.Len() > 0 {
			rec.status = http.StatusOK
		}
		if h.Passes(rec.status) {
			fmt.Fprintf(blog, "worker %s: health check %s passed: %d after %s (%d tries)\n",
				w.cfg.Name, h, rec.status, time.Since(start).Round(time.Millisecond), tries)
			return nil
		}
		herr.Status, herr.Body, herr.Err = rec.status, excerpt(rec.body.String()), ctx.Err()
		if herr.Status == 0 && herr.Err == nil {
			herr.Err = fmt.Errorf("no answer")
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if herr.Err == nil && herr.Status == 0 {
				herr.Err = ctx.Err()
			}
			fmt.Fprintf(blog, "worker %s: %v\n", w.cfg.Name, herr)
			return herr
		case <-t.C:
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// excerpt is the start of a body, valid UTF-8, at most healthExcerpt bytes.
func excerpt(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= healthExcerpt {
		return strings.ToValidUTF8(s, "?")
	}
	s = s[:healthExcerpt]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// healthRecorder keeps a health check's answer: its status and the start
// of its body.
type healthRecorder struct {
	header http.Header
	status int
	body   strings.Builder
}

func (r *healthRecorder) Header() http.Header { return r.header }

func (r *healthRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *healthRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if room := healthExcerpt + 4 - r.body.Len(); room > 0 {
		r.body.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
