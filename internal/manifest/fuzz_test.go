package manifest

import (
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	seeds := []string{
		``,
		"name = \"hello\"\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\ntimeout = \"10s\"\nmemory = \"128MiB\"\n[env]\nGREETING = \"hi\"\n[scale]\nmin = 0\nmax = 4\n",
		"runtime = \"docker\"\nport = 8080\nmemory = 1073741824\n",
		"scale.min = 2\nscale.max = 3\nenv = { A = \"b\" }",
		`prot = 8080`,
		`timeout = "abc"`,
		`timeout = "16m"`,
		`memory = "512KiB"`,
		`memory = "9999999999999999999GiB"`,
		"[env]\n1BAD = \"x\"",
		"[env.X]\nY = 1",
		"[scale]\nmin = 5\nmax = 2",
		"name = \"a\"\nname = \"b\"",
		"name = \"abc",
		`module = "../x.wasm"`,
		"[[scale]]\nmin = 1",
		"port = 1979-05-27T07:32:00Z",
		`entrypoint = "serve"`,
		`files = ["static/**", "t/*.html", { source = "a", destination = "/a" }]`,
		"[[files]]\nsource = \"a\"\ndestination = \"/\"",
		`volumes = { "/data" = "data" }`,
		`files = [{ source = "../a", destination = "a" }, 3]`,
		`allowed_hosts = ["https://API.example.com:443/", "http://127.0.0.1:9000", "http://[::ffff:10.0.0.1]:81"]`,
		`allowed_hosts = ["http://[fe80::1%25eth0]", "http://127.1", "insecure:allow-all"]`,
		"runtime = \"docker\"\nallowed_hosts = [\"https://a.example\"]\nhttp_max_concurrency = 3",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), FileName+": ") {
				t.Fatalf("error %q does not start with %q", err, FileName+": ")
			}
			return
		}
		// What Parse accepts must resolve to a valid manifest once the
		// defaults and a runtime are filled in, as Load does.
		if m.Name == "" {
			m.Name = "fuzz"
		}
		if m.Runtime == "" {
			m.Runtime = WASM
		}
		if m.Runtime == WASM && m.Module == "" {
			m.Module = "m.wasm"
		}
		applyDefaults(&m)
		if err := m.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted %+v, which does not validate: %v", data, m, err)
		}
	})
}
