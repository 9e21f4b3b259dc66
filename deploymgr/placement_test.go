package deploymgr

import (
	"slices"
	"testing"

	"github.com/velo-run/velo/internal/store"
)

func TestPick(t *testing.T) {
	workers := []store.Worker{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}}
	for _, tc := range []struct {
		name        string
		cfg         Config
		runtime     string
		load        map[string]int
		has         []string
		want        []string
		wantLoadOfA int
	}{
		{name: "wasm everywhere", runtime: "wasm", want: []string{"a", "b", "c", "d"}, wantLoadOfA: 1},
		{name: "wasm everywhere but where it is", runtime: "wasm", has: []string{"b", "c"}, want: []string{"a", "d"}, wantLoadOfA: 1},
		{name: "wasm replicas", cfg: Config{WasmReplicas: 2}, runtime: "wasm", load: map[string]int{"a": 3, "b": 1}, want: []string{"c", "d"}, wantLoadOfA: 3},
		{name: "docker least loaded", cfg: Config{DockerReplicas: 1}, runtime: "docker", load: map[string]int{"a": 2, "b": 1, "c": 1, "d": 5}, want: []string{"b"}, wantLoadOfA: 2},
		{name: "docker two replicas, one held", cfg: Config{DockerReplicas: 2}, runtime: "docker", load: map[string]int{"a": 0, "b": 1, "c": 1, "d": 1}, has: []string{"b"}, want: []string{"a"}, wantLoadOfA: 1},
		{name: "docker enough", cfg: Config{DockerReplicas: 1}, runtime: "docker", has: []string{"d"}, want: nil},
		{name: "more replicas than workers", cfg: Config{DockerReplicas: 9}, runtime: "docker", want: []string{"a", "b", "c", "d"}, wantLoadOfA: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.PublicURL = "http://x"
			m := &Manager{cfg: tc.cfg.withDefaults()}
			load := map[string]int{}
			for k, v := range tc.load {
				load[k] = v
			}
			has := map[string]bool{}
			for _, h := range tc.has {
				has[h] = true
			}
			got := m.pick(tc.runtime, workers, load, has)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("pick = %v, want %v", got, tc.want)
			}
			if load["a"] != tc.wantLoadOfA {
				t.Fatalf("load of a = %d, want %d (picks are counted)", load["a"], tc.wantLoadOfA)
			}
		})
	}
}
