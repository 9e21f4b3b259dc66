package manifest

import (
	"errors"
	"io/fs"
	"reflect"
	"testing"
	"testing/fstest"
	"time"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: 0o644} }

func TestLoad(t *testing.T) {
	wasmDefaults := func(name, module string) Manifest {
		return Manifest{Name: name, Runtime: WASM, Module: module, Timeout: DefaultTimeout, Memory: DefaultMemory, Concurrency: DefaultConcurrency, Scale: Scale{Max: DefaultMax}}
	}
	tests := []struct {
		name        string
		fsys        fstest.MapFS
		defaultName string
		want        Manifest
	}{
		{
			name:        "no manifest, one wasm file",
			fsys:        fstest.MapFS{"hello.wasm": file("\x00asm")},
			defaultName: "hello",
			want:        wasmDefaults("hello", "hello.wasm"),
		},
		{
			name:        "wasm file in a subdirectory",
			fsys:        fstest.MapFS{"target/wasm32-wasip1/release/app.wasm": file("\x00asm"), "src/main.rs": file("")},
			defaultName: "app",
			want:        wasmDefaults("app", "target/wasm32-wasip1/release/app.wasm"),
		},
		{
			name:        "no manifest, Dockerfile",
			fsys:        fstest.MapFS{"Dockerfile": file("FROM scratch"), "x.wasm": file("")},
			defaultName: "svc",
			want:        Manifest{Name: "svc", Runtime: Docker, Port: DefaultPort, Timeout: DefaultTimeout, Memory: DefaultMemory, Concurrency: DefaultConcurrency, Scale: Scale{Max: DefaultMax}},
		},
		{
			name:        "default name sanitized",
			fsys:        fstest.MapFS{"a.wasm": file("")},
			defaultName: "My_Project.v2",
			want:        wasmDefaults("my-project-v2", "a.wasm"),
		},
		{
			name:        "default name with leading digits and trailing junk",
			fsys:        fstest.MapFS{"a.wasm": file("")},
			defaultName: "42-Hello World!!",
			want:        wasmDefaults("hello-world", "a.wasm"),
		},
		{
			name: "manifest values win over defaults",
			fsys: fstest.MapFS{
				"velo.toml":  file("name = \"api\"\nruntime = \"docker\"\nport = 3000\ntimeout = \"30s\"\nmemory = \"256MiB\"\nconcurrency = 8\n[env]\nA = \"1\"\n[scale]\nmin = 1\nmax = 8\n"),
				"Dockerfile": file("FROM scratch"),
			},
			defaultName: "ignored",
			want:        Manifest{Name: "api", Runtime: Docker, Port: 3000, Timeout: 30 * time.Second, Memory: 256 << 20, Concurrency: 8, Env: map[string]string{"A": "1"}, Scale: Scale{Min: 1, Max: 8}},
		},
		{
			name:        "module named, runtime inferred",
			fsys:        fstest.MapFS{"velo.toml": file(`module = "./bin/b.wasm"`), "bin/a.wasm": file(""), "bin/b.wasm": file("")},
			defaultName: "b",
			want:        wasmDefaults("b", "bin/b.wasm"),
		},
		{
			name:        "wasm runtime, module inferred",
			fsys:        fstest.MapFS{"velo.toml": file(`runtime = "wasm"`), "m.wasm": file(""), "Dockerfile": file("")},
			defaultName: "m",
			want:        wasmDefaults("m", "m.wasm"),
		},
		{
			name:        "scale min above default max raises max",
			fsys:        fstest.MapFS{"velo.toml": file("[scale]\nmin = 6"), "Dockerfile": file("")},
			defaultName: "d",
			want:        Manifest{Name: "d", Runtime: Docker, Port: DefaultPort, Timeout: DefaultTimeout, Memory: DefaultMemory, Concurrency: DefaultConcurrency, Scale: Scale{Min: 6, Max: 6}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(tt.fsys, tt.defaultName)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Load =\n%+v\nwant\n%+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Load result does not validate: %v", err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name        string
		fsys        fstest.MapFS
		defaultName string
		want        string
	}{
		{"nothing to run", fstest.MapFS{"README": file("")}, "x",
			`velo.toml: runtime: not set, and the component has neither a Dockerfile at its root nor a .wasm module; add one or set runtime`},
		{"two wasm files", fstest.MapFS{"a.wasm": file(""), "b/c.wasm": file("")}, "x",
			`velo.toml: module: not set, and the component has 2 .wasm files (a.wasm, b/c.wasm); set module`},
		{"wasm runtime without wasm", fstest.MapFS{"velo.toml": file(`runtime = "wasm"`)}, "x",
			`velo.toml: module: not set, and the component has no .wasm file`},
		{"module missing", fstest.MapFS{"velo.toml": file(`module = "app.wasm"`), "other.wasm": file("")}, "x",
			`velo.toml: module: "app.wasm" is not in the component`},
		{"module is a directory", fstest.MapFS{"velo.toml": file(`module = "app.wasm"`), "app.wasm/x": file("")}, "x",
			`velo.toml: module: "app.wasm" is not a regular file`},
		{"docker without Dockerfile", fstest.MapFS{"velo.toml": file(`runtime = "docker"`), "dockerfile": file("")}, "x",
			`velo.toml: runtime: docker needs a Dockerfile at the root of the component`},
		{"Dockerfile not at root", fstest.MapFS{"velo.toml": file(`runtime = "docker"`), "sub/Dockerfile": file("")}, "x",
			`velo.toml: runtime: docker needs a Dockerfile at the root of the component`},
		{"default name hopeless", fstest.MapFS{"a.wasm": file("")}, "___",
			`velo.toml: name: not set, and the default "___" cannot be made a valid name; set name`},
		{"no default name", fstest.MapFS{"a.wasm": file("")}, "",
			`velo.toml: name: not set, and there is no default; set name`},
		{"bad manifest", fstest.MapFS{"velo.toml": file(`timeout = "abc"`), "a.wasm": file("")}, "x",
			`velo.toml: timeout: "abc" is not a duration`},
		{"scale min over explicit max", fstest.MapFS{"velo.toml": file("[scale]\nmin = 3\nmax = 2"), "a.wasm": file("")}, "x",
			`velo.toml: scale: min 3 is greater than max 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Load(tt.fsys, tt.defaultName)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want %q", m, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Load error\n got %q\nwant %q", err, tt.want)
			}
		})
	}
}

// brokenFS fails every read with something other than "not exist".
type brokenFS struct{}

var errBroken = errors.New("disk on fire")

func (brokenFS) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: errBroken}
}

func TestLoadReadError(t *testing.T) {
	_, err := Load(brokenFS{}, "x")
	if !errors.Is(err, errBroken) {
		t.Fatalf("Load = %v, want it to wrap %v", err, errBroken)
	}
}

func TestSanitize(t *testing.T) {
	tests := map[string]string{
		"hello":                        "hello",
		"Hello":                        "hello",
		"owner/repo":                   "owner-repo",
		"a__b":                         "a-b",
		"-x-":                          "x",
		"123":                          "",
		"é":                            "",
		"a" + string(make([]byte, 70)): "a",
	}
	for in, want := range tests {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	long := Sanitize("abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcdefg-hij")
	if len(long) != 62 {
		t.Errorf("Sanitize cut to %d characters, want 62 (63 less the trailing dash)", len(long))
	}
	if err := ValidName(long); err != nil {
		t.Errorf("Sanitize of a long name: %v", err)
	}
}
