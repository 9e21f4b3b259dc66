package worker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
)

// maxPendingLines bounds the log lines held between flushes; past it lines
// are dropped and counted, so a component that floods its output cannot
// grow the worker's memory.
const maxPendingLines = 20000

// logStore is what the log batcher writes to.
type logStore interface {
	AppendLogs(ctx context.Context, lines []store.LogLine) error
	Notify(ctx context.Context, n store.Note) error
}

// logBatcher collects component log lines and writes them in batches.
type logBatcher struct {
	store   logStore
	logger  *slog.Logger
	every   time.Duration
	mu      sync.Mutex
	pending []store.LogLine
	dropped map[string]int // component → lines dropped since last flush
}

func newLogBatcher(st logStore, logger *slog.Logger) *logBatcher {
	return &logBatcher{store: st, logger: logger, every: 200 * time.Millisecond, dropped: map[string]int{}}
}

func (b *logBatcher) add(l store.LogLine) {
	b.mu.Lock()
	if len(b.pending) >= maxPendingLines {
		b.dropped[l.Component]++
	} else {
		b.pending = append(b.pending, l)
	}
	b.mu.Unlock()
}

// run flushes until ctx is done, then flushes once more.
func (b *logBatcher) run(ctx context.Context) {
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			b.flush(fctx)
			cancel()
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, storeTimeout) // a hung store holds no line for ever
			b.flush(fctx)
			cancel()
		}
	}
}

func (b *logBatcher) flush(ctx context.Context) {
	b.mu.Lock()
	lines := b.pending
	b.pending = nil
	for c, n := range b.dropped {
		lines = append(lines, store.LogLine{Component: c, Time: time.Now(), Stream: System,
			Line: fmt.Sprintf("%d log lines dropped: the component wrote faster than they could be stored", n)})
	}
	clear(b.dropped)
	b.mu.Unlock()
	if len(lines) == 0 {
		return
	}
	if err := b.store.AppendLogs(ctx, lines); err != nil {
		b.logger.Warn("store logs failed", "lines", len(lines), "err", err)
		return
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if !seen[l.Component] {
			seen[l.Component] = true
			if err := b.store.Notify(ctx, store.LogsWritten(l.Component)); err != nil {
				b.logger.Warn("notify failed; followers poll", "component", l.Component, "err", err)
			}
		}
	}
}

// logSink is the LogSink handed to runtimes for one deployment.
type logSink struct {
	b          *logBatcher
	component  string
	deployment int64
	redact     *secrets.Redactor // the secret values the instance was given
}

func (s logSink) Log(stream string, at time.Time, line string) {
	s.b.add(store.LogLine{Component: s.component, Deployment: s.deployment, Time: at, Stream: stream, Line: storedLine(s.redact, line)})
}

// storedLine is what is stored of a line a component (WASM or Docker)
// wrote, or Velo wrote about it: its secret values redacted, then its
// control characters escaped (redaction first: a value holding a tab or
// an escape must still match). Every line of a component's logs passes
// here.
func storedLine(redact *secrets.Redactor, line string) string {
	return EscapeControls(redact.Line(line), false)
}

// EscapeControls returns s with every control character but tab (and
// newline, when multiline) written as an escape: C0 controls and DEL as
// \xNN, C1 controls (U+0080–U+009F) as \uNNNN. It is applied to every line
// a component logs, whatever its runtime, before the line is stored, so
// that what a component writes cannot drive the terminal of whoever reads
// its logs (`velo logs`), nor the API's or dashboard's readers: ESC [ …
// sequences could recolour, move the cursor, retitle the window or, on
// some terminals, write to the clipboard. Backslashes are left as they
// are, so an escape is not told apart from the same text written plainly;
// the result holds no control character, so escaping it again changes
// nothing. Invalid UTF-8 is left for the store, which replaces it.
func EscapeControls(s string, multiline bool) string {
	i := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if isControl(c, multiline) {
				break
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r >= 0x80 && r <= 0x9f {
			break
		}
		i += size
	}
	if i == len(s) {
		return s // the common case: nothing to escape, nothing allocated
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if isControl(c, multiline) {
				b.WriteString(`\x`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&15])
			} else {
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r >= 0x80 && r <= 0x9f {
			b.WriteString(`\u00`)
			b.WriteByte(hex[r>>4])
			b.WriteByte(hex[r&15])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func isControl(c byte, multiline bool) bool {
	return (c < 0x20 && c != '\t' && (c != '\n' || !multiline)) || c == 0x7f
}

// buildLog is the io.Writer runtimes write Prepare's progress to; it
// appends to the deployment's build log in batches.
type buildLog struct {
	store interface {
		AppendBuildLog(context.Context, int64, string) error
	}
	id     int64
	logger *slog.Logger
	mu     sync.Mutex
	buf    bytes.Buffer
	stop   chan struct{}
	done   chan struct{}
}

func newBuildLog(st interface {
	AppendBuildLog(context.Context, int64, string) error
}, id int64, logger *slog.Logger) *buildLog {
	l := &buildLog{store: st, id: id, logger: logger, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				l.flush()
				return
			case <-t.C:
				l.flush()
			}
		}
	}()
	return l
}

func (l *buildLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *buildLog) flush() {
	l.mu.Lock()
	// A build runs the component's own commands (a Dockerfile's RUN):
	// their output is escaped like its logs.
	text := EscapeControls(l.buf.String(), true)
	l.buf.Reset()
	l.mu.Unlock()
	if text == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.store.AppendBuildLog(ctx, l.id, text); err != nil {
		l.logger.Warn("store build log failed", "deployment", l.id, "err", err)
	}
}

// Close writes what is left and stops the flusher.
func (l *buildLog) Close() error {
	close(l.stop)
	<-l.done
	return nil
}
