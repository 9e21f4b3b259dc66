package migrations

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestEnginesHaveSameVersions(t *testing.T) {
	pg, err := For("postgres")
	if err != nil {
		t.Fatal(err)
	}
	lite, err := For("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if len(pg) == 0 || len(pg) != len(lite) {
		t.Fatalf("postgres has %d migrations, sqlite %d", len(pg), len(lite))
	}
	for i := range pg {
		if pg[i].Version != lite[i].Version || pg[i].Name != lite[i].Name {
			t.Errorf("migration %d: postgres %04d_%s, sqlite %04d_%s", i, pg[i].Version, pg[i].Name, lite[i].Version, lite[i].Name)
		}
		if strings.TrimSpace(pg[i].SQL) == "" || strings.TrimSpace(lite[i].SQL) == "" {
			t.Errorf("migration %04d is empty", pg[i].Version)
		}
	}
	if _, err := For("mysql"); err == nil {
		t.Error("For(mysql) succeeded")
	}
}

func TestLoadSortsAndRejects(t *testing.T) {
	fsys := fstest.MapFS{
		"x/0002_b.sql":   {Data: []byte("B")},
		"x/0001_a.sql":   {Data: []byte("A")},
		"x/README.md":    {Data: []byte("skip")},
		"bad/01_a.sql":   {Data: []byte("")},
		"dup/0001_a.sql": {Data: []byte("")},
		"dup/0001_b.sql": {Data: []byte("")},
		"nam/0001.sql":   {Data: []byte("")},
		"neg/0000_z.sql": {Data: []byte("")},
	}
	got, err := Load(fsys, "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Version != 1 || got[0].Name != "a" || got[0].SQL != "A" || got[1].Version != 2 {
		t.Errorf("Load = %+v", got)
	}
	for _, dir := range []string{"bad", "dup", "nam", "neg", "missing"} {
		if _, err := Load(fsys, dir); err == nil {
			t.Errorf("Load(%s) succeeded", dir)
		}
	}
}
