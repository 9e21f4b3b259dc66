package archive

import (
	"bytes"
	"slices"
	"testing"
)

func TestSub(t *testing.T) {
	tr, err := Read(bytes.NewReader(gz(t, tarBytes(t,
		file("velo.toml", "components = [\"services/*\"]\n"),
		file("services/api/velo.toml", "name = \"api\"\n"),
		file("services/api/src/main.go", "package main\n"),
		symlink("services/api/cur", "src/main.go"),
		file("services/api-extra/x", "not in api\n"),
		file("shared/lib.go", "package lib\n"),
		symlink("services/jobs/lib", "../../shared/lib.go"),
	))), Limits{}, false)
	if err != nil {
		t.Fatal(err)
	}
	api, err := tr.Sub("services/api")
	if err != nil {
		t.Fatal(err)
	}
	if got := api.Files(); !slices.Equal(got, []string{"cur", "src/main.go", "velo.toml"}) {
		t.Errorf("Sub files = %v", got)
	}
	if b, err := api.ReadFile("cur"); err != nil || string(b) != "package main\n" {
		t.Errorf("symlink inside the sub tree: %q %v", b, err)
	}
	if api.Size() != int64(len("name = \"api\"\n")+len("package main\n")) {
		t.Errorf("Sub size = %d", api.Size())
	}
	// A link that leaves the component's directory is refused, as it
	// would be in an archive of that directory alone.
	if _, err := tr.Sub("services/jobs"); err == nil {
		t.Error("Sub kept a symlink leading out of it")
	}
	for _, bad := range []string{"nowhere", "velo.toml", "."} {
		if _, err := tr.Sub(bad); err == nil {
			t.Errorf("Sub(%q) succeeded", bad)
		}
	}
}
