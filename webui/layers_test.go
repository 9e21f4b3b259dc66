package webui_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The dashboard reads through one path, the REST API: its code imports no
// store and no GitHub client (so it cannot show what the API would not)
// and re-declares no API shape (they live in internal/api).
func TestReadsOnlyThroughTheAPI(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range f.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			if strings.HasSuffix(path, "/internal/store") || strings.HasSuffix(path, "/internal/github") || strings.HasSuffix(path, "/deploymgr") {
				t.Errorf("%s imports %s: the dashboard reads only through the API", name, path)
			}
		}
		src, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range src.Scope.Objects {
			if l := strings.ToLower(obj.Name); strings.HasSuffix(l, "request") || strings.HasSuffix(l, "response") {
				t.Errorf("%s declares %s: API shapes live in internal/api", name, obj.Name)
			}
		}
	}
}
