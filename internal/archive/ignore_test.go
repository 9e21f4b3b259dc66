package archive

import "testing"

func TestIgnore(t *testing.T) {
	rules := ParseIgnore([]byte(`
# comment
   
*.log
!keep.log
/build
dist/
docs/*.tmp
**/cache
a/**/z
vendor/**
\#literal
\!bang
[unclosed
trailing   
`))
	tests := []struct {
		path  string
		isDir bool
		want  bool
	}{
		{"x.log", false, true},
		{"deep/x.log", false, true},
		{"keep.log", false, false},
		{"deep/keep.log", false, false},
		{"log", false, false},
		{"build", true, true},
		{"build", false, true},
		{"src/build", true, false}, // anchored
		{"dist", true, true},
		{"dist", false, false}, // directories only
		{"src/dist", true, true},
		{"docs/a.tmp", false, true},
		{"docs/sub/a.tmp", false, false}, // '*' stops at '/'
		{"a.tmp", false, false},
		{"cache", true, true},
		{"x/y/cache", true, true},
		{"a/z", false, true},
		{"a/b/c/z", false, true},
		{"b/a/z", false, false},
		{"vendor", true, false}, // "vendor/**" is what is inside
		{"vendor/m/x.go", false, true},
		{"#literal", false, true},
		{"!bang", false, true},
		{"bang", false, false},
		{"[unclosed", false, false},
		{"trailing", false, true},
		{"main.go", false, false},
	}
	for _, tt := range tests {
		if got := rules.Match(tt.path, tt.isDir); got != tt.want {
			t.Errorf("Match(%q, dir=%v) = %v, want %v", tt.path, tt.isDir, got, tt.want)
		}
	}
}

func TestIgnoreQuestionMarkAndClass(t *testing.T) {
	rules := ParseIgnore([]byte("file?.txt\n[ab].md\n"))
	for p, want := range map[string]bool{"file1.txt": true, "file12.txt": false, "a.md": true, "c.md": false, "x/b.md": true} {
		if got := rules.Match(p, false); got != want {
			t.Errorf("Match(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestIgnoreEmpty(t *testing.T) {
	if (&Ignore{}).Match("anything", false) || ParseIgnore(nil).Match("x", true) {
		t.Error("empty rules ignore something")
	}
}
