package manifest

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseComponents(t *testing.T) {
	for _, tc := range []struct {
		name, toml string
		ok         bool
		want       Components
		err        string // a word of the error; "" none
	}{
		{"one component", "name = \"x\"\n", false, Components{}, ""},
		{"empty", "", false, Components{}, ""},
		{"globs", "components = [\"services/*\", \"./apps/*/\"]\n", true, Components{Globs: []string{"services/*", "apps/*"}}, ""},
		{"tables", "[[component]]\npath = \"web\"\n[[component]]\npath = \"services/api\"\n", true, Components{Paths: []string{"web", "services/api"}}, ""},
		{"both", "components = [\"s/*\"]\n[[component]]\npath = \"w\"\n", true, Components{Paths: []string{"w"}, Globs: []string{"s/*"}}, ""},
		{"other key beside", "name = \"x\"\ncomponents = [\"s/*\"]\n", false, Components{}, "put name in"},
		{"unknown table key", "[[component]]\npath = \"w\"\nname = \"x\"\n", false, Components{}, "component.name"},
		{"no path", "[[component]]\n", false, Components{}, "component[0].path"},
		{"escapes", "[[component]]\npath = \"../other\"\n", false, Components{}, "inside the repository"},
		{"absolute", "components = [\"/srv/*\"]\n", false, Components{}, "inside the repository"},
		{"root", "[[component]]\npath = \".\"\n", false, Components{}, "inside the repository"},
		{"bad glob", "components = [\"s/[\"]\n", false, Components{}, "not a glob"},
		{"not a list", "components = \"s/*\"\n", false, Components{}, "list"},
		{"not strings", "components = [1]\n", false, Components{}, "components[0]"},
		{"empty list", "components = []\n", false, Components{}, "no component"},
		{"bad toml", "components = [\n", false, Components{}, "line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := ParseComponents([]byte(tc.toml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil || ok != tc.ok || !slices.Equal(got.Paths, tc.want.Paths) || !slices.Equal(got.Globs, tc.want.Globs) {
				t.Fatalf("ParseComponents = %+v %v %v, want %+v %v", got, ok, err, tc.want, tc.ok)
			}
		})
	}
}

func TestComponentDirs(t *testing.T) {
	fsys := fstest.MapFS{
		"velo.toml":                  {Data: []byte("components = [\"services/*\"]\n[[component]]\npath = \"web\"\n[[component]]\npath = \"services/api\"\n")},
		"services/api/velo.toml":     {Data: []byte("name = \"api\"\n")},
		"services/jobs/main.wasm":    {Data: []byte("\x00asm")},
		"services/README.md":         {Data: []byte("not a directory\n")},
		"web/velo.toml":              {Data: []byte("")},
		"other/velo.toml":            {Data: []byte("")},
		"single/velo.toml":           {Data: []byte("name = \"one\"\n")},
		"bad/velo.toml":              {Data: []byte("[[component]]\npath = \"nowhere\"\n")},
		"noglob/velo.toml":           {Data: []byte("components = [\"x/*\"]\n")},
		"noglob/x/file.txt":          {Data: []byte("")},
		"services/jobs/sub/deep.txt": {Data: []byte("")},
	}
	dirs, ok, err := ComponentDirs(fsys)
	if err != nil || !ok || !slices.Equal(dirs, []string{"services/api", "services/jobs", "web"}) {
		t.Errorf("ComponentDirs = %v %v %v", dirs, ok, err)
	}
	sub := func(d string) fstest.MapFS {
		out := fstest.MapFS{}
		for p, f := range fsys {
			if r, ok := strings.CutPrefix(p, d+"/"); ok {
				out[r] = f
			}
		}
		return out
	}
	if _, ok, err := ComponentDirs(sub("single")); ok || err != nil {
		t.Errorf("single component: %v %v", ok, err)
	}
	if _, _, err := ComponentDirs(sub("bad")); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("missing path: %v", err)
	}
	if _, _, err := ComponentDirs(sub("noglob")); err == nil || !strings.Contains(err.Error(), "matches no directory") {
		t.Errorf("glob of files only: %v", err)
	}
	if _, ok, err := ComponentDirs(fstest.MapFS{}); ok || err != nil {
		t.Errorf("no velo.toml: %v %v", ok, err)
	}
}

// FuzzParseComponents: a root velo.toml is untrusted input (it comes with
// a push); whatever it holds, the directories accepted stay inside the
// repository.
func FuzzParseComponents(f *testing.F) {
	f.Add([]byte("components = [\"services/*\"]\n[[component]]\npath = \"web\"\n"))
	f.Add([]byte("[[component]]\npath = \"../x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ok, err := ParseComponents(data)
		if err != nil || !ok {
			return
		}
		for _, p := range append(slices.Clone(c.Paths), c.Globs...) {
			if checkDir(p) != nil {
				t.Fatalf("accepted %q", p)
			}
		}
	})
}
