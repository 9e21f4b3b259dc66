package docker

import (
	"bytes"
	"sync"
	"time"

	"github.com/velo-run/velo/worker"
)

// maxLine caps one log line; longer output is cut into several lines so a
// component printing without newlines cannot grow the buffer without bound.
const maxLine = 16 << 10

// lineWriter splits what a container writes into lines for a LogSink.
type lineWriter struct {
	mu     sync.Mutex
	sink   worker.LogSink
	stream string
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) >= maxLine {
				w.emit(w.buf[:maxLine])
				w.buf = w.buf[maxLine:]
				continue
			}
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) == 0 {
		w.buf = nil
	}
	return len(p), nil
}

// Flush emits a trailing line that has no newline.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}

// emit sends one line. Docker prefixes each line with its RFC 3339 timestamp
// (LogsOptions.Timestamps), which becomes the line's time.
func (w *lineWriter) emit(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	at := time.Now()
	if sp := bytes.IndexByte(line, ' '); sp > 0 {
		if t, err := time.Parse(time.RFC3339Nano, string(line[:sp])); err == nil {
			at, line = t, line[sp+1:]
		}
	}
	w.sink.Log(w.stream, at, string(line))
}

// tail keeps the last n lines written to it.
type tail struct {
	n     int
	lines []string
	part  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.add(string(bytes.TrimRight(t.part[:i], "\r")))
		t.part = t.part[i+1:]
	}
	return len(p), nil
}

func (t *tail) add(line string) {
	if line == "" {
		return
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

// String returns the kept lines, the unterminated last one included.
func (t *tail) String() string {
	if len(t.part) > 0 {
		t.add(string(t.part))
		t.part = nil
	}
	var b bytes.Buffer
	for i, l := range t.lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(l)
	}
	return b.String()
}
