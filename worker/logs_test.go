package worker

import (
	"testing"
	"time"
)

func TestEscapeControls(t *testing.T) {
	tests := []struct{ in, want, multi string }{
		{"plain text, tab\tand ünïcödé ✓", "plain text, tab\tand ünïcödé ✓", ""},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, ""},
		{"bell\a cr\r nul\x00 del\x7f", `bell\x07 cr\x0d nul\x00 del\x7f`, ""},
		{"title \x1b]0;pwned\x07", `title \x1b]0;pwned\x07`, ""},
		{"c1 csi \u009b31m and nel \u0085", `c1 csi \u009b31m and nel \u0085`, ""},
		{"two\nlines", `two\x0alines`, "two\nlines"},
		{"back\\slash \\x1b stays", "back\\slash \\x1b stays", ""},
		{"bad utf-8 \xff\xc2 stays for the store", "bad utf-8 \xff\xc2 stays for the store", ""},
	}
	for _, tt := range tests {
		if got := EscapeControls(tt.in, false); got != tt.want {
			t.Errorf("EscapeControls(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if again := EscapeControls(tt.want, false); again != tt.want {
			t.Errorf("escaping %q again gave %q", tt.want, again)
		}
		multi := tt.multi
		if multi == "" {
			multi = tt.want
		}
		if got := EscapeControls(tt.in, true); got != multi {
			t.Errorf("EscapeControls(%q, multiline) = %q, want %q", tt.in, got, multi)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = EscapeControls("nothing to escape here", false) }); n != 0 {
		t.Errorf("%v allocations for a clean line", n)
	}
}

func FuzzEscapeControls(f *testing.F) {
	f.Add("\x1b[31mred\u009b\n\t")
	f.Fuzz(func(t *testing.T, s string) {
		for _, multi := range []bool{false, true} {
			out := EscapeControls(s, multi)
			for i := 0; i < len(out); i++ {
				if isControl(out[i], multi) {
					t.Fatalf("EscapeControls(%q) = %q holds control byte %#x", s, out, out[i])
				}
			}
			for _, r := range out {
				if r >= 0x80 && r <= 0x9f {
					t.Fatalf("EscapeControls(%q) = %q holds C1 control %U", s, out, r)
				}
			}
			if EscapeControls(out, multi) != out {
				t.Fatalf("escaping %q is not idempotent", s)
			}
		}
	})
}

// TestLogSinkEscapes checks the one place every runtime's lines pass: the
// sink the worker hands to Prepare (WASM stderr and Docker stdout/stderr
// alike) stores them escaped.
func TestLogSinkEscapes(t *testing.T) {
	b := newLogBatcher(nil, nil)
	s := logSink{b: b, component: "c", deployment: 1}
	s.Log(Stderr, time.Now(), "\x1b[2J\x1b[31mred")
	s.Log(Stdout, time.Now(), "plain")
	if len(b.pending) != 2 || b.pending[0].Line != `\x1b[2J\x1b[31mred` || b.pending[1].Line != "plain" {
		t.Errorf("stored %+v", b.pending)
	}
}
