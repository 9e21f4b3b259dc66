package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRowFigure reads rows made by the bench's own formatters.
func TestRowFigure(t *testing.T) {
	tests := []struct {
		row  [6]string
		want jsonFigure
	}{{
		row: [6]string{"cold start p50 (n=20)", fmtDur(501 * time.Millisecond), fmtDur(499 * time.Millisecond), "1.00×", "≤ 1.1× bare", verdict(true)},
		want: jsonFigure{Value: ptr(0.501), Unit: "s", Peer: ptr(0.499), PeerUnit: "s", Ratio: ptr(1.0),
			TargetOp: "<=", TargetValue: ptr(1.1), TargetUnit: "×", TargetOn: "ratio", Verdict: "pass"},
	}, {
		row: [6]string{"warm p50 vs raw wazero", fmtDur(70 * time.Microsecond), fmtDur(49 * time.Microsecond), fmtDiff(21 * time.Microsecond), "≤ raw + 150 µs", verdict(true)},
		want: jsonFigure{Value: ptr(70e-6), Unit: "s", Peer: ptr(49e-6), PeerUnit: "s", Ratio: ptr(70.0 / 49),
			Difference: ptr(21e-6), DifferenceUnit: "s", TargetOp: "<=", TargetValue: ptr(150e-6), TargetUnit: "s", TargetOn: "difference", Verdict: "pass"},
	}, {
		row: [6]string{"wrk latency p99", fmtDur(12800 * time.Microsecond), fmtDur(42400 * time.Microsecond), fmtDiff(-29600 * time.Microsecond), "", info},
		want: jsonFigure{Value: ptr(0.0128), Unit: "s", Peer: ptr(0.0424), PeerUnit: "s", Ratio: ptr(12.8 / 42.4),
			Difference: ptr(-0.0296), DifferenceUnit: "s", Verdict: "info"},
	}, {
		row: [6]string{"throughput, 32 connections (req/s)", "425", "430", "1.35×", "≥ 0.80×", pass + " (rounds disagree: 0.37–1.53×)"},
		want: jsonFigure{Value: ptr(425), Unit: "req/s", Peer: ptr(430), PeerUnit: "req/s", Ratio: ptr(1.35),
			TargetOp: ">=", TargetValue: ptr(0.8), TargetUnit: "×", TargetOn: "ratio", Verdict: "pass", VerdictNote: "rounds disagree: 0.37–1.53×"},
	}, {
		row: [6]string{"hit recording cost", "3900 req/s on", "4000 off", "-4.4 %", "≤ 3 %", verdict(true)},
		want: jsonFigure{Value: ptr(3900), Unit: "req/s", Peer: ptr(4000), Difference: ptr(-4.4), DifferenceUnit: "%",
			TargetOp: "<=", TargetValue: ptr(3), TargetUnit: "%", TargetOn: "difference", Verdict: "pass"},
	}, {
		row: [6]string{"RSS per idle component at 1000 components", "34 KiB", "", "41.0 MiB total", "≤ 64 KiB at 10 000", verdict(true)},
		want: jsonFigure{Value: ptr(34 << 10), Unit: "B", Difference: ptr(41 << 20), DifferenceUnit: "B",
			TargetOp: "<=", TargetValue: ptr(64 << 10), TargetUnit: "B", TargetOn: "value", Verdict: "pass"},
	}, {
		row:  [6]string{"New components deployed per second", "3.9/s", "", "per batch: 3.1, 4.0", "≥ 100/s", verdict(false)},
		want: jsonFigure{Value: ptr(3.9), Unit: "/s", TargetOp: ">=", TargetValue: ptr(100), TargetUnit: "/s", TargetOn: "value", Verdict: "miss"},
	}, {
		row:  [6]string{"first calls not answered", "0 of 400", "—", "", "0", verdict(true)},
		want: jsonFigure{Value: ptr(0), TargetOp: "=", TargetValue: ptr(0), TargetOn: "value", Verdict: "pass"},
	}, {
		row:  [6]string{"route lookup, 10 / 1000 / 10000 components", "1110 / 919 / 849 ns", "", "", "flat", info},
		want: jsonFigure{Value: ptr(1110), Verdict: "info"},
	}, {
		row:  [6]string{"p99 latency", fmtDur(-490 * time.Microsecond), "", "", "no worse than nginx", verdict(true)},
		want: jsonFigure{Value: ptr(-490e-6), Unit: "s", TargetOp: "<=", Verdict: "pass"},
	}}
	for _, tt := range tests {
		got := rowFigure(tt.row)
		tt.want.Figure, tt.want.Text, tt.want.PeerText, tt.want.CompareText, tt.want.Target = tt.row[0], tt.row[1], tt.row[2], tt.row[3], tt.row[4]
		if !sameFigure(got, tt.want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(tt.want)
			t.Errorf("%q:\n got %s\nwant %s", tt.row[0], g, w)
		}
	}
}

// TestJSONFromRun runs two made-up sections the way doMain does, one of
// them failing, and checks the -json file: the figures of the section that
// ran, with its run, and sections of earlier runs kept in their order.
func TestJSONFromRun(t *testing.T) {
	b, err := newBench(time.Second, 1, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close(false)
	docker := section{name: "docker", run: func(_ context.Context, b *Bench) (string, error) {
		t := b.newTable("")
		t.add("cold start p50", fmtDur(501*time.Millisecond), fmtDur(499*time.Millisecond), "1.00×", "≤ 1.1× bare", verdict(true))
		t.add("wake from paused p50", fmtDur(60*time.Millisecond), fmtDur(28*time.Millisecond), "2.14×", "≤ 50 ms", verdict(false))
		return "## docker\n\n" + t.String(), nil
	}}
	broken := section{name: "router", run: func(_ context.Context, b *Bench) (string, error) {
		b.newTable("").add("half a figure", "1", "", "", "", info)
		return "", errors.New("nginx not installed")
	}}
	path := filepath.Join(t.TempDir(), "results.json")
	// An earlier run measured wasm and webhook.
	if err := writeJSON(path, []jsonSection{{Name: "webhook"}, {Name: "wasm"}}, names()); err != nil {
		t.Fatal(err)
	}

	bodies, figures, failed := b.runSections(context.Background(), []section{broken, docker})
	if !failed || len(bodies) != 1 || len(figures) != 1 {
		t.Fatalf("failed=%v bodies=%d figures=%d, want one section through and a failure", failed, len(bodies), len(figures))
	}
	if err := writeJSON(path, figures, names()); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc jsonResults
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, s := range doc.Sections {
		order = append(order, s.Name)
	}
	if doc.Format != jsonFormat || strings.Join(order, ",") != "wasm,docker,webhook" {
		t.Fatalf("format %q, sections %v; want %q and wasm,docker,webhook", doc.Format, order, jsonFormat)
	}
	d := doc.Sections[1]
	if d.Run.CPUs < 1 || d.Run.Go == "" || d.Run.LoadAverage == "" || d.Run.Started.IsZero() || d.Run.Rounds != 1 {
		t.Errorf("run not described: %+v", d.Run)
	}
	if len(d.Figures) != 2 {
		t.Fatalf("figures %+v, want the two of the docker section", d.Figures)
	}
	wake := d.Figures[1]
	if wake.Figure != "wake from paused p50" || !near(wake.Value, 0.060) || wake.Unit != "s" || !near(wake.Peer, 0.028) ||
		!near(wake.Ratio, 2.14) || wake.TargetOp != "<=" || !near(wake.TargetValue, 0.050) || wake.TargetUnit != "s" || wake.TargetOn != "value" || wake.Verdict != "miss" {
		t.Errorf("wake figure: %s", raw)
	}

	// A second run of the docker section replaces it in place.
	again := section{name: "docker", run: func(_ context.Context, b *Bench) (string, error) {
		b.newTable("").add("cold start p50", "400 ms", "", "", "", info)
		return "x", nil
	}}
	_, figures, _ = b.runSections(context.Background(), []section{again})
	if err := writeJSON(path, figures, names()); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(path)
	doc = jsonResults{}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Sections) != 3 || doc.Sections[1].Name != "docker" || len(doc.Sections[1].Figures) != 1 || !near(doc.Sections[1].Figures[0].Value, 0.4) {
		t.Errorf("docker section not replaced in place: %s", raw)
	}

	// A file in another format is not overwritten.
	other := filepath.Join(t.TempDir(), "other.json")
	os.WriteFile(other, []byte(`{"format":"velo-bench/0","sections":[]}`), 0o644)
	if err := writeJSON(other, figures, names()); err == nil {
		t.Error("a file of another format was overwritten")
	}
}

// TestCheckedInResultsParse reads every table row of bench/RESULTS.md as
// -json would: each figure with a verdict has a number, and each target
// that states a bound has one.
func TestCheckedInResultsParse(t *testing.T) {
	f, err := os.Open("RESULTS.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	rows := 0
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| figure |") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 6 {
			continue
		}
		var r [6]string
		for i, c := range cells {
			r[i] = strings.TrimSpace(c)
		}
		rows++
		fig := rowFigure(r)
		if fig.Verdict != "info" && fig.Value == nil {
			t.Errorf("row %q: no value read from %q", r[0], r[1])
		}
		if strings.ContainsAny(r[4], "≤≥") && fig.TargetOp == "" {
			t.Errorf("row %q: no bound read from target %q", r[0], r[4])
		}
		if fig.TargetValue != nil && fig.TargetOn == "" {
			t.Errorf("row %q: target %q applies to neither the value %q nor the comparison %q", r[0], r[4], r[1], r[3])
		}
	}
	if rows < 20 {
		t.Fatalf("read %d rows from RESULTS.md; its tables changed shape", rows)
	}
}

// TestEveryTableIsRecorded checks that sections make their tables with
// newTable, so that none of their figures is missing from -json.
func TestEveryTableIsRecorded(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "jsonresults.go" {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "table" {
					t.Errorf("%s: a table made without b.newTable; its rows would be missing from -json", fset.Position(n.Pos()))
				}
			case *ast.ValueSpec:
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "table" {
					t.Errorf("%s: a table declared without b.newTable; its rows would be missing from -json", fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
}

func ptr(v float64) *float64 { return &v }

func near(p *float64, want float64) bool {
	return p != nil && math.Abs(*p-want) <= 1e-9+1e-6*math.Abs(want)
}

func sameNum(a, b *float64) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && near(a, *b))
}

func sameFigure(a, b jsonFigure) bool {
	nums := sameNum(a.Value, b.Value) && sameNum(a.Peer, b.Peer) && sameNum(a.Ratio, b.Ratio) &&
		sameNum(a.Difference, b.Difference) && sameNum(a.TargetValue, b.TargetValue)
	a.Value, a.Peer, a.Ratio, a.Difference, a.TargetValue = nil, nil, nil, nil, nil
	b.Value, b.Peer, b.Ratio, b.Difference, b.TargetValue = nil, nil, nil, nil, nil
	return nums && a == b
}
