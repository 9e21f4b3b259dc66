package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/api"
)

// Follow stream tuning. The server sends ": keepalive" comments, so a
// connection silent for idleTimeout is presumed dead and replaced.
const (
	defaultRetry = time.Second
	maxRetry     = 30 * time.Second
	idleTimeout  = 90 * time.Second
	maxEventLine = 1 << 20
)

// FollowLogs streams a component's logs: first the last tail lines (0: the
// server's default), then every new line as it is written, calling fn for
// each in order. When the connection drops it reconnects, sending
// Last-Event-ID so that no line is lost or repeated, until ctx is done (it
// then returns ctx's error) or fn returns an error (returned as is). Errors
// before the first connection succeeds, and 4xx answers, end it at once.
func (c *Client) FollowLogs(ctx context.Context, name string, tail int, fn func(api.LogLine) error) error {
	f := &follower{c: c, name: name, tail: tail, fn: fn, retry: defaultRetry, idle: idleTimeout}
	return f.run(ctx)
}

// follower is the state of one FollowLogs call across reconnections.
type follower struct {
	c    *Client
	name string
	tail int
	fn   func(api.LogLine) error

	lastID    string        // SSE last event ID, sent back as Last-Event-ID
	seen      int64         // highest LogLine.ID delivered, to drop repeats
	retry     time.Duration // reconnection delay, settable by the server
	idle      time.Duration
	connected bool // whether any connection was ever established
}

// stopError carries an error that must end FollowLogs rather than cause a
// reconnection (fn's own, or an undecodable event) out of the stream.
type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }

func (f *follower) run(ctx context.Context) error {
	failures := 0 // consecutive attempts that got no stream
	for {
		established, err := f.connect(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var stop stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		var apiErr *Error
		if !f.connected || errors.As(err, &apiErr) && apiErr.Status < 500 || errors.Is(err, errNotEventStream) {
			return err
		}
		if established {
			failures = 0
		} else {
			failures++
		}
		// Back off, doubling while reconnections keep failing.
		delay := f.retry
		for i := 1; i < failures && delay < maxRetry; i++ {
			delay *= 2
		}
		t := time.NewTimer(min(delay, maxRetry))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// errStreamEnded means the server closed a working stream.
var errStreamEnded = errors.New("log stream ended")

// errNotEventStream means the server answered follow with something else.
var errNotEventStream = errors.New("server did not answer with an event stream")

// connect runs one connection to its end; established reports whether the
// server answered with a stream.
func (f *follower) connect(ctx context.Context) (established bool, err error) {
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	q := url.Values{"follow": {"1"}}
	if f.tail > 0 {
		q.Set("tail", strconv.Itoa(f.tail))
	}
	req, err := f.c.newRequest(connCtx, http.MethodGet, componentPath(f.name, "/logs")+"?"+q.Encode(), nil, "")
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if f.lastID != "" {
		req.Header.Set("Last-Event-ID", f.lastID)
	}
	resp, err := f.c.send(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return false, fmt.Errorf("follow logs of %s: %w (Content-Type %q)", f.name, errNotEventStream, resp.Header.Get("Content-Type"))
	}
	f.connected = true

	watchdog := time.AfterFunc(f.idle, cancel)
	defer watchdog.Stop()
	p := parser{
		onLine: func() { watchdog.Reset(f.idle) },
		onID:   func(id string) { f.lastID = id },
		onRetry: func(d time.Duration) {
			f.retry = d
		},
		onEvent: f.dispatch,
	}
	err = p.parse(resp.Body)
	if err == nil {
		return true, errStreamEnded
	}
	if ctx.Err() == nil && connCtx.Err() != nil {
		return true, fmt.Errorf("log stream idle for %s", f.idle)
	}
	return true, err
}

// dispatch handles one event: a JSON LogLine unless typed otherwise.
func (f *follower) dispatch(typ, data string) error {
	if typ != "" && typ != "message" {
		return nil
	}
	var line api.LogLine
	if err := json.Unmarshal([]byte(data), &line); err != nil {
		return stopError{fmt.Errorf("decode log event: %w", err)}
	}
	if line.ID != 0 {
		if line.ID <= f.seen {
			return nil // already delivered before a reconnection
		}
		f.seen = line.ID
	}
	if err := f.fn(line); err != nil {
		return stopError{err}
	}
	return nil
}

// parser reads a text/event-stream as the HTML Living Standard describes:
// lines end in CRLF, LF or CR; a blank line dispatches the event; lines
// starting with ':' are comments; "data" fields accumulate, joined by
// newlines; "retry" takes effect at once, "id" when its event is complete
// (so a connection cut mid-event resumes before that event).
type parser struct {
	onLine  func()
	onID    func(string)
	onRetry func(time.Duration)
	onEvent func(typ, data string) error
}

// parse reads events until r ends (nil; a trailing partial event is
// dropped), fails, or onEvent returns an error.
func (p *parser) parse(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventLine)
	sc.Split(scanLines)
	var (
		typ, id        string
		data           strings.Builder
		hasData, hasID bool
	)
	for sc.Scan() {
		if p.onLine != nil {
			p.onLine()
		}
		line := sc.Text()
		if line == "" {
			if hasID && p.onID != nil {
				p.onID(id)
			}
			if hasData {
				if err := p.onEvent(typ, strings.TrimSuffix(data.String(), "\n")); err != nil {
					return err
				}
			}
			typ, hasData = "", false
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue // comment, e.g. ": keepalive"
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				id, hasID = value, true
			}
		case "retry":
			if ms, err := strconv.ParseUint(value, 10, 32); err == nil && p.onRetry != nil {
				p.onRetry(time.Duration(ms) * time.Millisecond)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read log stream: %w", err)
	}
	return nil
}

// scanLines is a bufio.SplitFunc for lines ending in "\r\n", "\n" or "\r".
func scanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	i := bytes.IndexAny(data, "\r\n")
	if i < 0 {
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	}
	if data[i] == '\r' {
		if i+1 == len(data) && !atEOF {
			return 0, nil, nil // a '\n' may follow
		}
		if i+1 < len(data) && data[i+1] == '\n' {
			return i + 2, data[:i], nil
		}
	}
	return i + 1, data[:i], nil
}
