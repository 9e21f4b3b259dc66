package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/manifest"
)

// Async queues calls to be run later (the event engine, internal/events):
// the calls made with Prefer: respond-async and the inbound events.
type Async interface {
	// Enqueue stores c durably and returns its invocation id; dup is true
	// when c's Idempotency-Key had made that invocation already.
	// ErrQueueFull when the component's queue is at its bound.
	Enqueue(ctx context.Context, c *Call) (id int64, dup bool, err error)
}

// Call is one queued request: exactly what the router would have sent the
// component, run later through Invoke.
type Call struct {
	Component  string          `json:"component"`
	Method     string          `json:"method"`
	Host       string          `json:"host"`
	URI        string          `json:"uri"` // path and query, as received
	Header     http.Header     `json:"header"`
	Body       []byte          `json:"body,omitempty"`
	RemoteAddr string          `json:"remote_addr"`
	Source     string          `json:"source"` // SourceAsync | SourceEvent | SourceSchedule
	Key        string          `json:"key,omitempty"`
	Timeout    time.Duration   `json:"timeout"`
	Events     manifest.Events `json:"events"` // with defaults
}

// Where a queued call came from.
const (
	SourceAsync    = "async"    // Prefer: respond-async
	SourceEvent    = "event"    // POST /events/NAME/…
	SourceSchedule = "schedule" // a [[schedule]] tick
)

// Headers of queued calls.
const (
	HeaderInvocation = "X-Velo-Invocation"
	HeaderAttempt    = "X-Velo-Attempt"
)

// MaxQueuedBody bounds the body of a queued call: it is stored in the
// queue's row.
const MaxQueuedBody = 4 << 20

// EventsPrefix is where inbound events are posted: /events/NAME/….
const EventsPrefix = "/events/"

// ErrQueueFull is the error of Async.Enqueue for a full queue.
var ErrQueueFull = errors.New("the component's queue is full")

// ErrBadSignature is the error of Async.Enqueue for an inbound event whose
// signature ([events] verify) is missing or wrong: answered 401, nothing
// queued.
var ErrBadSignature = errors.New("bad signature")

// ErrPaused and ErrNoComponent are Invoke's errors for a call that cannot
// run now (it waits) or ever (it is dropped).
var (
	ErrPaused      = errors.New("the component is paused")
	ErrNoComponent = errors.New("no such component")
)

// prefersAsync reports whether a request asks to be answered at once and
// run later (RFC 7240 Prefer: respond-async).
func prefersAsync(h http.Header) bool {
	for _, v := range h["Prefer"] {
		for _, p := range strings.Split(v, ",") {
			p, _, _ = strings.Cut(p, ";")
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

// enqueue queues req for rt and answers 202 with where to follow it.
func (r *Router) enqueue(w http.ResponseWriter, req *http.Request, rt *route, source string) {
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxQueuedBody+1))
	if err != nil {
		plain(w, http.StatusBadRequest, "reading the request body failed")
		return
	}
	if len(body) > MaxQueuedBody {
		plain(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a queued call's body is at most %d bytes", MaxQueuedBody))
		return
	}
	h := req.Header.Clone()
	delete(h, "Prefer")
	key := h.Get("Idempotency-Key")
	if len(key) > 255 {
		plain(w, http.StatusBadRequest, "Idempotency-Key is longer than 255 characters")
		return
	}
	c := &Call{
		Component: rt.name, Method: req.Method, Host: req.Host, URI: req.URL.RequestURI(),
		Header: h, Body: body, RemoteAddr: req.RemoteAddr, Source: source, Key: key,
		Timeout: rt.timeout, Events: rt.events,
	}
	id, dup, err := r.cfg.Async.Enqueue(req.Context(), c)
	switch {
	case errors.Is(err, ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		plain(w, http.StatusTooManyRequests, fmt.Sprintf("component %q has %d calls queued, its bound ([events] max_queued)", rt.name, rt.events.MaxQueued))
		return
	case errors.Is(err, ErrBadSignature):
		plain(w, http.StatusUnauthorized, err.Error())
		return
	case err != nil:
		r.cfg.Logger.Warn("queue a call failed", "component", rt.name, "err", err)
		plain(w, http.StatusServiceUnavailable, "the call could not be queued; try again")
		return
	}
	sid := strconv.FormatInt(id, 10)
	wh := w.Header()
	wh.Set("Location", "/api/v1/invocations/"+sid)
	wh.Set(HeaderInvocation, sid)
	wh.Set("Content-Type", "application/json")
	if dup {
		wh.Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"id": id, "status": "queued"})
}

// ServeEvents accepts inbound events, POST /events/NAME/…: queued for
// component NAME as a call of /fn/NAME/…, answered 202 once stored.
// Signatures ([events] verify) are checked by the Async implementation.
func (r *Router) ServeEvents(w http.ResponseWriter, req *http.Request) {
	rest, ok := strings.CutPrefix(req.URL.Path, EventsPrefix)
	name, _, _ := strings.Cut(rest, "/")
	if !ok || name == "" {
		plain(w, http.StatusNotFound, "not found: events are posted to "+EventsPrefix+"NAME/")
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		plain(w, http.StatusMethodNotAllowed, "events are POSTed")
		return
	}
	rt := r.table.Load().routes[name]
	if rt == nil || r.cfg.Async == nil {
		plain(w, http.StatusNotFound, fmt.Sprintf("no component named %q", name))
		return
	}
	r.prepare(req)
	if !r.limitEvent(w, req, rt, time.Now()) {
		return
	}
	u := *req.URL
	u.Path = Prefix + rest
	u.RawPath = ""
	req2 := req.Clone(req.Context())
	req2.URL = &u
	req2.Host = ""
	r.enqueue(w, req2, rt, SourceEvent)
}

// Paused reports whether component is paused in the route table, so that
// an executor holds its queued calls without taking them up (Invoke would
// answer ErrPaused).
func (r *Router) Paused(component string) bool {
	rt := r.table.Load().routes[component]
	return rt != nil && rt.paused
}

// Invoke runs queued call c, attempt number attempt of invocation id,
// through the normal call path (the route table, round-robin, the worker's
// limits, logs and statistics) and writes the answer to w. It returns
// ErrPaused, having written nothing, while the component is paused, and
// ErrNoComponent when it no longer exists.
func (r *Router) Invoke(ctx context.Context, w http.ResponseWriter, c *Call, id int64, attempt int) error {
	req, err := http.NewRequestWithContext(ctx, c.Method, c.URI, strings.NewReader(string(c.Body)))
	if err != nil {
		return fmt.Errorf("queued call %d: %w", id, err)
	}
	req.Host, req.RemoteAddr = c.Host, c.RemoteAddr
	req.Header = c.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	// The stored header is the router's own work (prepare took the
	// client's X-Velo-* out, admit put the caller's identity in): it
	// passes as it is.
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	req.Header.Set(HeaderInvocation, strconv.FormatInt(id, 10))
	req.ContentLength = int64(len(c.Body))
	if req.Host == "" {
		req.Host = "localhost"
	}
	name, mount, ok := r.component(req)
	if !ok || name != c.Component {
		// Host routing changed (VELO_DOMAIN): serve it on the path.
		name, mount = c.Component, Prefix+c.Component
	}
	rt := r.table.Load().routes[name]
	switch {
	case rt == nil:
		return ErrNoComponent
	case rt.paused:
		return ErrPaused
	}
	r.forward(w, req, rt, mount, time.Now())
	return nil
}

// Scheduled is a component's [[schedule]] tables, as the route table has
// them.
type Scheduled struct {
	Component string
	Schedules []manifest.Schedule
	// Call is the call a tick of schedule i makes.
	Call func(i int) *Call
}

// Schedules returns the schedules of the components with a live
// deployment (for the event engine's scheduler).
func (r *Router) Schedules() []Scheduled {
	var out []Scheduled
	for _, rt := range r.table.Load().routes {
		if len(rt.sched) == 0 || rt.depID == 0 {
			continue
		}
		rt := rt
		out = append(out, Scheduled{Component: rt.name, Schedules: rt.sched, Call: func(i int) *Call {
			s := rt.sched[i]
			return &Call{
				Component: rt.name, Method: s.Method, URI: Prefix + rt.name + s.Path,
				Header: http.Header{"User-Agent": {"velo-schedule"}}, Body: []byte(s.Body),
				RemoteAddr: "127.0.0.1:0", Source: SourceSchedule, Timeout: rt.timeout, Events: rt.events,
			}
		}})
	}
	return out
}
