package manifest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Manifest
	}{
		{"empty", ``, Manifest{}},
		{"design example", `
name = "hello"
runtime = "wasm"
module = "hello.wasm"
build = "GOOS=wasip1 GOARCH=wasm go build -o hello.wasm ."
port = 8080
timeout = "10s"
memory = "128MiB"
[env]
GREETING = "hi"
[scale]
min = 0
max = 4
`, Manifest{
			Name: "hello", Runtime: WASM, Module: "hello.wasm",
			Build: "GOOS=wasip1 GOARCH=wasm go build -o hello.wasm .",
			Port:  8080, Timeout: 10 * time.Second, Memory: 128 << 20,
			Env: map[string]string{"GREETING": "hi"}, Scale: Scale{Min: 0, Max: 4},
		}},
		{"docker", `runtime = "docker"`, Manifest{Runtime: Docker}},
		{"module dot slash", `module = "./bin/app.wasm"`, Manifest{Module: "bin/app.wasm"}},
		{"timeout compound", `timeout = "1m30s"`, Manifest{Timeout: 90 * time.Second}},
		{"timeout max", `timeout = "15m"`, Manifest{Timeout: 15 * time.Minute}},
		{"memory MB", `memory = "64MB"`, Manifest{Memory: 64_000_000}},
		{"memory GiB", `memory = "1GiB"`, Manifest{Memory: 1 << 30}},
		{"memory KiB", `memory = "2048KiB"`, Manifest{Memory: 2 << 20}},
		{"memory lower case with space", `memory = "256 mib"`, Manifest{Memory: 256 << 20}},
		{"memory bytes", `memory = 1048576`, Manifest{Memory: 1 << 20}},
		{"concurrency", `concurrency = 4`, Manifest{Concurrency: 4}},
		{"memory string bytes", `memory = "4294967296"`, Manifest{Memory: 4 << 30}},
		{"port bounds", `port = 65535`, Manifest{Port: 65535}},
		{"env underscore and digits", "[env]\n_A1 = \"\"\nb_2 = \"x=y\"", Manifest{Env: map[string]string{"_A1": "", "b_2": "x=y"}}},
		{"env inline", `env = { PORTLESS = "1" }`, Manifest{Env: map[string]string{"PORTLESS": "1"}}},
		{"scale dotted", "scale.min = 2\nscale.max = 100", Manifest{Scale: Scale{Min: 2, Max: 100}}},
		{"scale only min", "[scale]\nmin = 7", Manifest{Scale: Scale{Min: 7}}},
		{"name 63", `name = "a` + strings.Repeat("b", 62) + `"`, Manifest{Name: "a" + strings.Repeat("b", 62)}},
		{"comments", "# a component\nname = \"x-1\" # trailing", Manifest{Name: "x-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // the whole error message
	}{
		{"syntax", "name = \"a\"\n\nport = = 3", `velo.toml: line 3: expected value but found '=' instead`},
		{"unterminated string", "name = \"abc", `velo.toml: line 1: unexpected EOF; expected '"'`},
		{"duplicate key", "port = 1\nport = 2", `velo.toml: line 2: Key 'port' has already been defined.`},
		{"unknown key typo", `prot = 8080`, `velo.toml: unknown key "prot" (did you mean "port"?)`},
		{"unknown key", `colour = "red"`, `velo.toml: unknown key "colour"`},
		{"unknown key case", `Name = "x"`, `velo.toml: unknown key "Name" (did you mean "name"?)`},
		{"unknown table", "[scaling]\nmin = 1", `velo.toml: unknown key "scaling"`},
		{"unknown scale key", "[scale]\nmn = 1", `velo.toml: unknown key "scale.mn" (did you mean "scale.min"?)`},
		{"unknown table typo", "[scael]\nmin = 1", `velo.toml: unknown key "scael" (did you mean "scale"?)`},
		{"unknown scale key far", "[scale]\ndesired = 1", `velo.toml: unknown key "scale.desired"`},
		{"first unknown wins", "zzz = 1\naaa = 2", `velo.toml: unknown key "zzz"`},

		{"name type", `name = 3`, `velo.toml: name: must be a string, not integer`},
		{"name empty", `name = ""`, `velo.toml: name: a name must not be empty`},
		{"name upper", `name = "Hello"`, `velo.toml: name: "Hello" must start with a lowercase letter a-z`},
		{"name char", `name = "he_llo"`, `velo.toml: name: "he_llo" contains '_'; a name may only hold a-z, 0-9 and '-'`},
		{"name digit first", `name = "1a"`, `velo.toml: name: "1a" must start with a lowercase letter a-z`},
		{"name trailing dash", `name = "a-"`, `velo.toml: name: "a-" must not end with '-'`},
		{"name too long", `name = "a` + strings.Repeat("b", 63) + `"`, `velo.toml: name: "a` + strings.Repeat("b", 63) + `" is 64 characters long; a name has at most 63`},

		{"runtime bad", `runtime = "java"`, `velo.toml: runtime: "java" is not a runtime; use "wasm" or "docker"`},
		{"runtime case", `runtime = "WASM"`, `velo.toml: runtime: "WASM" is not a runtime; use "wasm" or "docker"`},
		{"runtime type", `runtime = ["wasm"]`, `velo.toml: runtime: must be a string, not array`},

		{"module empty", `module = ""`, `velo.toml: module: must not be empty`},
		{"module absolute", `module = "/hello.wasm"`, `velo.toml: module: "/hello.wasm" must be a relative path to a file inside the component`},
		{"module escapes", `module = "../hello.wasm"`, `velo.toml: module: "../hello.wasm" must be a relative path to a file inside the component`},
		{"module dot", `module = "."`, `velo.toml: module: "." must be a relative path to a file inside the component`},
		{"module backslash", `module = 'bin\x.wasm'`, `velo.toml: module: "bin\\x.wasm" must be a relative path to a file inside the component`},

		{"build type", `build = true`, `velo.toml: build: must be a string, not boolean`},

		{"port zero", `port = 0`, `velo.toml: port: 0 is out of range 1-65535`},
		{"port big", `port = 70000`, `velo.toml: port: 70000 is out of range 1-65535`},
		{"port negative", `port = -1`, `velo.toml: port: -1 is out of range 1-65535`},
		{"port string", `port = "8080"`, `velo.toml: port: must be an integer, not string`},
		{"port float", `port = 80.5`, `velo.toml: port: must be an integer, not float`},

		{"timeout bad", `timeout = "abc"`, `velo.toml: timeout: "abc" is not a duration`},
		{"timeout no unit", `timeout = "10"`, `velo.toml: timeout: "10" is not a duration`},
		{"timeout integer", `timeout = 10`, `velo.toml: timeout: must be a duration string like "10s", not integer`},
		{"timeout zero", `timeout = "0s"`, `velo.toml: timeout: 0s must be positive`},
		{"timeout negative", `timeout = "-1s"`, `velo.toml: timeout: -1s must be positive`},
		{"timeout too long", `timeout = "16m"`, `velo.toml: timeout: 16m0s exceeds the maximum of 15m0s`},

		{"memory bad unit", `memory = "12XB"`, `velo.toml: memory: "12XB" is not a size (want e.g. "128MiB", "64MB", "1GiB" or a number of bytes)`},
		{"memory no number", `memory = "MiB"`, `velo.toml: memory: "MiB" is not a size (want e.g. "128MiB", "64MB", "1GiB" or a number of bytes)`},
		{"memory fraction", `memory = "1.5GiB"`, `velo.toml: memory: "1.5GiB" is not a size (want e.g. "128MiB", "64MB", "1GiB" or a number of bytes)`},
		{"memory overflow", `memory = "99999999999999GiB"`, `velo.toml: memory: "99999999999999GiB" is not a size (want e.g. "128MiB", "64MB", "1GiB" or a number of bytes)`},
		{"memory small", `memory = "512KiB"`, `velo.toml: memory: 512KiB is below the minimum of 1MiB`},
		{"memory small bytes", `memory = 1000`, `velo.toml: memory: 1000B is below the minimum of 1MiB`},
		{"memory zero", `memory = 0`, `velo.toml: memory: 0B is below the minimum of 1MiB`},
		{"memory big", `memory = "5GiB"`, `velo.toml: memory: 5GiB exceeds the maximum of 4GiB`},
		{"memory float", `memory = 1.5`, `velo.toml: memory: must be a size string or a number of bytes, not float`},
		{"concurrency zero", `concurrency = 0`, `velo.toml: concurrency: 0 is out of range 1-10000 (calls at once per worker)`},
		{"concurrency negative", `concurrency = -3`, `velo.toml: concurrency: -3 is out of range 1-10000 (calls at once per worker)`},
		{"concurrency huge", `concurrency = 10001`, `velo.toml: concurrency: 10001 is out of range 1-10000 (calls at once per worker)`},
		{"concurrency string", `concurrency = "8"`, `velo.toml: concurrency: must be an integer, not string`},

		{"env not table", `env = "A=b"`, `velo.toml: env: must be a table, not string`},
		{"env bad name", "[env]\n\"1BAD\" = \"x\"", `velo.toml: env: "1BAD" is not a valid variable name (want [A-Za-z_][A-Za-z0-9_]*)`},
		{"env dash name", "[env]\nMY-VAR = \"x\"", `velo.toml: env: "MY-VAR" is not a valid variable name (want [A-Za-z_][A-Za-z0-9_]*)`},
		{"env empty name", "[env]\n\"\" = \"x\"", `velo.toml: env: "" is not a valid variable name (want [A-Za-z_][A-Za-z0-9_]*)`},
		{"env integer", "[env]\nN = 3", `velo.toml: env.N: must be a string, not integer (quote it)`},
		{"env bool", "[env]\nDEBUG = true", `velo.toml: env.DEBUG: must be a string, not boolean (quote it)`},
		{"env nested", "[env.X]\nY = \"z\"", `velo.toml: env.X: must be a string, not table (quote it)`},

		{"scale not table", `scale = 3`, `velo.toml: scale: must be a table, not integer`},
		{"scale min negative", "[scale]\nmin = -1", `velo.toml: scale.min: -1 is out of range 0-100`},
		{"scale max zero", "[scale]\nmax = 0", `velo.toml: scale.max: 0 is out of range 1-100`},
		{"scale max big", "[scale]\nmax = 101", `velo.toml: scale.max: 101 is out of range 1-100`},
		{"scale min big", "[scale]\nmin = 101", `velo.toml: scale.min: 101 is out of range 0-100`},
		{"scale min over max", "[scale]\nmin = 5\nmax = 2", `velo.toml: scale: min 5 is greater than max 2`},
		{"scale type", "[scale]\nmax = \"4\"", `velo.toml: scale.max: must be an integer, not string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want error %q", m, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse error\n got %q\nwant %q", err, tt.want)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	good := []string{"a", "hello", "hello-world", "a1", "x-1-y", "a" + strings.Repeat("0", 62)}
	for _, n := range good {
		if err := ValidName(n); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", n, err)
		}
	}
	bad := map[string]string{
		"":                            "a name must not be empty",
		"-a":                          `"-a" must start with a lowercase letter a-z`,
		"9lives":                      `"9lives" must start with a lowercase letter a-z`,
		"Hello":                       `"Hello" must start with a lowercase letter a-z`,
		"hEllo":                       `"hEllo" contains 'E'; a name may only hold a-z, 0-9 and '-'`,
		"a.b":                         `"a.b" contains '.'; a name may only hold a-z, 0-9 and '-'`,
		"a b":                         `"a b" contains ' '; a name may only hold a-z, 0-9 and '-'`,
		"café":                        `"café" contains 'é'; a name may only hold a-z, 0-9 and '-'`,
		"ab-":                         `"ab-" must not end with '-'`,
		"a" + strings.Repeat("b", 63): `"a` + strings.Repeat("b", 63) + `" is 64 characters long; a name has at most 63`,
	}
	for n, want := range bad {
		err := ValidName(n)
		if err == nil || err.Error() != want {
			t.Errorf("ValidName(%q) = %v, want %q", n, err, want)
		}
	}
}

func TestParseSizeFormatSize(t *testing.T) {
	for _, n := range []int64{0, 1, 1000, 1024, 1 << 20, 3 << 20, 1<<30 + 1, 4 << 30} {
		got, err := ParseSize(FormatSize(n))
		if err != nil || got != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, FormatSize(n), got, err)
		}
	}
	for _, s := range []string{"", "-1", "1 ", "1  MiB", "1TiB", "1e6", "0x10"} {
		if n, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", s, n)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Manifest{Name: "a", Runtime: WASM, Module: "a.wasm", Timeout: time.Second, Memory: 1 << 20, Concurrency: 1, Scale: Scale{Max: 1}}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	tests := []struct {
		name   string
		change func(*Manifest)
		want   string
	}{
		{"no name", func(m *Manifest) { m.Name = "" }, "velo.toml: name: a name must not be empty"},
		{"no runtime", func(m *Manifest) { m.Runtime = "" }, `velo.toml: runtime: "" is not a runtime; use "wasm" or "docker"`},
		{"wasm no module", func(m *Manifest) { m.Module = "" }, "velo.toml: module: must be set for the wasm runtime"},
		{"unclean module", func(m *Manifest) { m.Module = "./a.wasm" }, `velo.toml: module: "./a.wasm" is not a clean path (want "a.wasm")`},
		{"docker no port", func(m *Manifest) { m.Runtime = Docker }, "velo.toml: port: 0 is out of range 1-65535"},
		{"no timeout", func(m *Manifest) { m.Timeout = 0 }, "velo.toml: timeout: 0s must be positive"},
		{"no memory", func(m *Manifest) { m.Memory = 0 }, "velo.toml: memory: 0B is below the minimum of 1MiB"},
		{"no concurrency", func(m *Manifest) { m.Concurrency = 0 }, "velo.toml: concurrency: 0 is out of range 1-10000 (calls at once per worker)"},
		{"no max", func(m *Manifest) { m.Scale.Max = 0 }, "velo.toml: scale.max: 0 is out of range 1-100"},
		{"min over max", func(m *Manifest) { m.Scale.Min = 2 }, "velo.toml: scale: min 2 is greater than max 1"},
		{"env name", func(m *Manifest) { m.Env = map[string]string{"A B": ""} }, `velo.toml: env: "A B" is not a valid variable name (want [A-Za-z_][A-Za-z0-9_]*)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			tt.change(&m)
			err := m.Validate()
			if err == nil || err.Error() != tt.want {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}
