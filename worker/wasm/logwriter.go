package wasm

import (
	"bytes"
	"time"

	"github.com/velo-run/velo/worker"
)

// Limits of what one request may put in the component's logs.
const (
	maxLogLine     = 8 << 10 // longer lines are split
	maxLogLines    = 1000    // per request; then one truncation notice
	truncateNotice = "[velo: stderr truncated, more than 1000 lines in one request]"
)

// lineWriter turns a module's stderr into log lines: each "\n"-ended line
// (without a trailing "\r") becomes one LogSink entry; lines longer than
// maxLogLine are split; the partial last line is sent by flush. It holds no
// buffer until something is written. Not safe for concurrent use, which a
// module's stderr never needs.
type lineWriter struct {
	sink   worker.LogSink
	stream string
	buf    []byte
	lines  int
}

// Write implements io.Writer. It never fails: logs are best effort.
func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if w.lines > maxLogLines {
			return n, nil
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogLine - len(w.buf)
			if len(p) <= room {
				w.buf = append(w.buf, p...)
				return n, nil
			}
			w.buf = append(w.buf, p[:room]...)
			p = p[room:]
			w.emit()
			continue
		}
		line := p[:i]
		p = p[i+1:]
		for len(w.buf)+len(line) > maxLogLine {
			room := maxLogLine - len(w.buf)
			w.buf = append(w.buf, line[:room]...)
			line = line[room:]
			w.emit()
		}
		w.buf = append(w.buf, line...)
		w.emit()
	}
	return n, nil
}

// flush sends a partial last line, if any.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 && w.lines <= maxLogLines {
		w.emit()
	}
}

// reset readies w for another request, keeping its buffer.
func (w *lineWriter) reset(sink worker.LogSink) {
	w.sink, w.stream, w.buf, w.lines = sink, worker.Stderr, w.buf[:0], 0
}

func (w *lineWriter) emit() {
	line := w.buf
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	w.lines++
	switch {
	case w.lines <= maxLogLines:
		w.sink.Log(w.stream, time.Now(), string(line))
	case w.lines == maxLogLines+1:
		w.sink.Log(worker.System, time.Now(), truncateNotice)
	}
	w.buf = w.buf[:0]
}
