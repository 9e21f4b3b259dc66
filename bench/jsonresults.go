package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// jsonFormat names the layout of the -json file; it changes when a field
// changes meaning, so that files gathered from many hosts can be told apart.
const jsonFormat = "velo-bench/1"

// jsonResults is the -json file: the figures of RESULTS.md as data, one
// entry per section, each with the run that measured it.
type jsonResults struct {
	Format   string        `json:"format"`
	Sections []jsonSection `json:"sections"`
}

type jsonSection struct {
	Name    string       `json:"name"`
	Run     jsonRun      `json:"run"`
	Figures []jsonFigure `json:"figures"`
}

// jsonRun says where and when a section was measured.
type jsonRun struct {
	Started     time.Time `json:"started"`
	Command     string    `json:"command"`
	Host        string    `json:"host"`
	CPUs        int       `json:"cpus"`
	CPU         string    `json:"cpu"`
	Go          string    `json:"go"`
	OS          string    `json:"os"`
	Arch        string    `json:"arch"`
	LoadAverage string    `json:"load_average"`
	Commit      string    `json:"commit,omitempty"`
	Dirty       bool      `json:"dirty,omitempty"`
	Rounds      int       `json:"rounds"`
	Duration    string    `json:"duration"`
}

// jsonFigure is one row of a section's table. The *_text fields are the
// cells as RESULTS.md shows them; the numbers are read from those cells,
// with durations in seconds and sizes in bytes so that rows from runs
// on different hosts compare directly. A number is absent when its cell
// holds none (an empty cell, a list, "100 of 100" keeps its count).
type jsonFigure struct {
	// Table names the table within the section when it has several
	// (the wasm section has one per module).
	Table  string `json:"table,omitempty"`
	Figure string `json:"figure"`

	Value *float64 `json:"value,omitempty"`
	Unit  string   `json:"unit,omitempty"`
	Text  string   `json:"text,omitempty"`

	Peer     *float64 `json:"peer,omitempty"`
	PeerUnit string   `json:"peer_unit,omitempty"`
	PeerText string   `json:"peer_text,omitempty"`

	// Ratio is Velo over the peer: the section's own ratio when its
	// comparison cell is one ("1.28×"), else value/peer when both are in
	// the same unit.
	Ratio *float64 `json:"ratio,omitempty"`
	// Difference is the comparison cell when it is a quantity other than
	// a ratio ("+21 µs", "-4.4 %"), in Unit.
	Difference     *float64 `json:"difference,omitempty"`
	DifferenceUnit string   `json:"difference_unit,omitempty"`
	CompareText    string   `json:"compare_text,omitempty"`

	Target      string   `json:"target,omitempty"`
	TargetOp    string   `json:"target_op,omitempty"` // "<=", ">=", "=" when the target has a bound
	TargetValue *float64 `json:"target_value,omitempty"`
	TargetUnit  string   `json:"target_unit,omitempty"`
	// TargetOn is the field the bound applies to: "value", "ratio" or
	// "difference" ("≤ raw + 150 µs" bounds the difference).
	TargetOn string `json:"target_on,omitempty"`

	// Verdict is "pass", "miss" or "info" (no target); VerdictNote what
	// the section added to it ("rounds disagree: 0.37–1.53×").
	Verdict     string `json:"verdict"`
	VerdictNote string `json:"verdict_note,omitempty"`
}

// newTable starts a results table of the section being run; label names
// it when a section has several. Its rows go into the -json file.
func (b *Bench) newTable(label string) *table {
	t := &table{label: label}
	b.mu.Lock()
	b.tables = append(b.tables, t)
	b.mu.Unlock()
	return t
}

// takeTables returns the tables made since the last call and forgets them.
func (b *Bench) takeTables() []*table {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts := b.tables
	b.tables = nil
	return ts
}

// run describes this run for the -json file.
func (b *Bench) run() jsonRun {
	host, _ := os.Hostname()
	r := jsonRun{
		Started: b.started.UTC().Truncate(time.Second), Command: strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " ")),
		Host: host, CPUs: runtime.NumCPU(), CPU: cpuModel(), Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		LoadAverage: b.load, Rounds: b.Rounds, Duration: b.Duration.String(),
	}
	if out, err := exec.Command("git", "-C", b.Root, "rev-parse", "HEAD").Output(); err == nil {
		r.Commit = strings.TrimSpace(string(out))
		st, err := exec.Command("git", "-C", b.Root, "status", "--porcelain", "--untracked-files=no").Output()
		r.Dirty = err == nil && len(bytes.TrimSpace(st)) > 0
	}
	return r
}

// sectionJSON turns a section's tables into its -json entry.
func sectionJSON(name string, run jsonRun, tables []*table) jsonSection {
	s := jsonSection{Name: name, Run: run, Figures: []jsonFigure{}}
	for _, t := range tables {
		for _, r := range t.rows {
			f := rowFigure(r)
			f.Table = t.label
			s.Figures = append(s.Figures, f)
		}
	}
	return s
}

// writeJSON updates the -json file at path as writeResults updates
// RESULTS.md: the sections run are replaced where they are, new ones are
// added in the order of order, the others are kept.
func writeJSON(path string, run []jsonSection, order string) error {
	doc := jsonResults{Format: jsonFormat}
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("read json results: %w", err)
	default:
		if err := json.Unmarshal(old, &doc); err != nil {
			return fmt.Errorf("read json results %s: %w", path, err)
		}
		if doc.Format != jsonFormat {
			return fmt.Errorf("json results %s: format %q, want %q (move the old file away)", path, doc.Format, jsonFormat)
		}
	}
	for _, s := range run {
		i := indexSection(doc.Sections, s.Name)
		if i >= 0 {
			doc.Sections[i] = s
			continue
		}
		// Before the first kept section that comes after it in order.
		at := len(doc.Sections)
		pos := rank(order, s.Name)
		for j, o := range doc.Sections {
			if rank(order, o.Name) > pos {
				at = j
				break
			}
		}
		doc.Sections = append(doc.Sections[:at], append([]jsonSection{s}, doc.Sections[at:]...)...)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write json results: %w", err)
	}
	return os.Rename(tmp, path)
}

func indexSection(ss []jsonSection, name string) int {
	for i, s := range ss {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// rank is name's place in the comma-separated order; unknown names sort last.
func rank(order, name string) int {
	for i, n := range strings.Split(order, ",") {
		if n == name {
			return i
		}
	}
	return 1 << 30
}

// rowFigure reads the numbers out of a table row.
func rowFigure(r [6]string) jsonFigure {
	f := jsonFigure{Figure: r[0], Text: r[1], PeerText: r[2], CompareText: r[3], Target: r[4]}
	f.Value, f.Unit = quantity(r[1])
	if f.Unit == "" && f.Value != nil {
		f.Unit = unitIn(r[0])
	}
	f.Peer, f.PeerUnit = quantity(r[2])
	if f.PeerUnit == "" && f.Peer != nil {
		f.PeerUnit = unitIn(r[0])
	}
	if v, u := quantity(r[3]); v != nil {
		if u == "×" {
			f.Ratio = v
		} else {
			f.Difference, f.DifferenceUnit = v, u
		}
	}
	if f.Ratio == nil && f.Value != nil && f.Peer != nil && f.Unit == f.PeerUnit && *f.Peer != 0 {
		x := *f.Value / *f.Peer
		f.Ratio = &x
	}
	f.TargetOp, f.TargetValue, f.TargetUnit = target(r[4])
	switch {
	case f.TargetValue == nil:
	case f.TargetUnit == "×":
		f.TargetOn = "ratio"
	case strings.Contains(r[4], "+"):
		f.TargetOn = "difference"
	case f.Value != nil && f.Unit == f.TargetUnit:
		f.TargetOn = "value"
	case f.Difference != nil && f.DifferenceUnit == f.TargetUnit:
		f.TargetOn = "difference"
	}
	verdict, note, _ := strings.Cut(strings.TrimSpace(r[5]), " ")
	switch verdict {
	case pass:
		f.Verdict = "pass"
	case miss:
		f.Verdict = "miss"
	default:
		f.Verdict = "info"
	}
	f.VerdictNote = strings.Trim(strings.TrimSpace(note), "()")
	return f
}

// quantityRE is a number at the start of a cell, as the bench's formatters
// write them (fmtDur, fmtDiff, "%.2f×", "%.1f %%", mib, "%.0f KiB", "%.1f/s"),
// and the unit right after it.
var quantityRE = regexp.MustCompile(`^([+\-−]?[0-9]+(?:\.[0-9]+)?)\s?(µs|us|ns|ms|s\b|×|x\b|%|req/s|/s|GiB|MiB|KiB|B\b)?`)

// quantity reads the number that starts s and its unit, durations in
// seconds and sizes in bytes. No number, no value.
func quantity(s string) (*float64, string) {
	m := quantityRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return nil, ""
	}
	v, err := strconv.ParseFloat(strings.Replace(m[1], "−", "-", 1), 64)
	if err != nil {
		return nil, ""
	}
	unit := m[2]
	switch unit {
	case "ns":
		v, unit = v/1e9, "s"
	case "µs", "us":
		v, unit = v/1e6, "s"
	case "ms":
		v, unit = v/1e3, "s"
	case "x":
		unit = "×"
	case "KiB":
		v, unit = v*(1<<10), "B"
	case "MiB":
		v, unit = v*(1<<20), "B"
	case "GiB":
		v, unit = v*(1<<30), "B"
	}
	return &v, unit
}

// unitIn is the unit a figure's name gives its bare numbers, as in
// "throughput, 32 connections (req/s)".
func unitIn(figure string) string {
	if strings.Contains(figure, "(req/s") {
		return "req/s"
	}
	return ""
}

// target reads a bound like "≤ 1.1× bare", "≥ 0.80×", "≤ 500 ms" or "0".
func target(s string) (op string, v *float64, unit string) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "≤"):
		op, s = "<=", strings.TrimPrefix(s, "≤")
	case strings.HasPrefix(s, "≥"):
		op, s = ">=", strings.TrimPrefix(s, "≥")
	case strings.HasPrefix(s, "no worse than"):
		return "<=", nil, ""
	}
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "+"); op != "" && i > 0 {
		// "≤ raw + 150 µs", "≤ native + 100 µs": a bound on the difference.
		s = strings.TrimSpace(s[i+1:])
	}
	v, unit = quantity(s)
	if v == nil {
		return op, nil, ""
	}
	if op == "" {
		op = "="
	}
	return op, v, unit
}
