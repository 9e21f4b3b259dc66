package install

import (
	"slices"
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Target
		err  string
	}{
		{"ssh://admin@10.0.0.2", Target{"admin", "10.0.0.2", "22"}, ""},
		{"ssh://10.0.0.2:2222", Target{"root", "10.0.0.2", "2222"}, ""},
		{"ssh://admin@[fd00::1]:22", Target{"admin", "fd00::1", "22"}, ""},
		{"10.0.0.2", Target{}, "want ssh://"},
		{"http://admin@h", Target{}, "want ssh://"},
		{"ssh://admin:pw@h", Target{}, "no password"},
		{"ssh://h:99999", Target{}, "port"},
		{"ssh://h/path", Target{}, "want ssh://"},
	} {
		got, err := ParseTarget(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseTarget(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	if s := (Target{"admin", "fd00::1", "2222"}).String(); s != "ssh://admin@[fd00::1]:2222" {
		t.Errorf("String: %s", s)
	}
}

func TestParseRoles(t *testing.T) {
	if got, err := ParseRoles("all"); err != nil || !slices.Equal(got, []string{"deploymgr", "worker", "router", "webui"}) {
		t.Errorf("all: %v, %v", got, err)
	}
	// Start order whatever the order given, each once.
	if got, err := ParseRoles("router, worker,router,deploymgr"); err != nil || !slices.Equal(got, []string{"deploymgr", "worker", "router"}) {
		t.Errorf("router,worker,router,deploymgr: %v, %v", got, err)
	}
	if _, err := ParseRoles("worker,scheduler"); err == nil || !strings.Contains(err.Error(), `"scheduler"`) {
		t.Errorf("unknown role: %v", err)
	}
}

func TestGoPlatform(t *testing.T) {
	for _, c := range []struct{ sys, machine, goos, goarch string }{
		{"Linux", "x86_64", "linux", "amd64"},
		{"Linux", "aarch64", "linux", "arm64"},
		{"Linux", "riscv64", "linux", "riscv64"},
	} {
		if goos, goarch, err := goPlatform(c.sys, c.machine); err != nil || goos != c.goos || goarch != c.goarch {
			t.Errorf("%s %s: %s/%s, %v", c.sys, c.machine, goos, goarch, err)
		}
	}
	if _, _, err := goPlatform("Darwin", "arm64"); err == nil || !strings.Contains(err.Error(), "Linux") {
		t.Errorf("Darwin: %v", err)
	}
	// Velo does not build for 32-bit platforms (riversqlite): said before
	// a cross-compile fails on it.
	for _, m := range []string{"i686", "armv7l"} {
		if _, _, err := goPlatform("Linux", m); err == nil || !strings.Contains(err.Error(), "64-bit hosts only") {
			t.Errorf("%s: %v, want it refused as 32-bit", m, err)
		}
	}
	if _, _, err := goPlatform("Linux", "pdp11"); err == nil {
		t.Errorf("pdp11: no error")
	}
}

func TestEnvFile(t *testing.T) {
	e := parseEnv("# comment\nVELO_A=1\n\nVELO_B=x=y\n")
	e.set("VELO_A", "2")
	e.setDefault("VELO_B", func() string { return "no" })
	e.setDefault("VELO_C", func() string { return "3" })
	again := parseEnv(e.String())
	if again.get("VELO_A") != "2" || again.get("VELO_B") != "x=y" || again.get("VELO_C") != "3" || !slices.Equal(again.keys, []string{"VELO_A", "VELO_B", "VELO_C"}) {
		t.Errorf("round trip: %q", e.String())
	}
}

func TestUnits(t *testing.T) {
	h := &host{Host: Host{Target: Target{"admin", "10.0.0.3", "22"}, Roles: []string{"worker", "router"}}}
	w := h.unit("worker")
	for _, want := range []string{"User=velo", "EnvironmentFile=/etc/velo/velo.env", "ExecStart=/usr/local/bin/velo worker --addr 0.0.0.0:8082 --name 10.0.0.3 --advertise http://10.0.0.3:8082 --data /var/lib/velo/worker"} {
		if !strings.Contains(w, want) {
			t.Errorf("worker unit has no %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, ".socket") {
		t.Errorf("worker unit uses a socket unit:\n%s", w)
	}
	if r := h.unit("router"); !strings.Contains(r, "Requires=velo-router.socket") {
		t.Errorf("router unit without its socket:\n%s", r)
	}
	if s := socket("router"); !strings.Contains(s, "ListenStream=8080") {
		t.Errorf("router socket:\n%s", s)
	}
	var paths []string
	for _, f := range h.files(parseEnv("VELO_A=1")) {
		paths = append(paths, f.path)
		if f.path == EnvPath && f.mode != 0o600 {
			t.Errorf("env file mode %o", f.mode)
		}
	}
	if want := []string{EnvPath, unitDir + "/velo-worker.service", unitDir + "/velo-router.service", unitDir + "/velo-router.socket"}; !slices.Equal(paths, want) {
		t.Errorf("files %v, want %v", paths, want)
	}
}

func TestQuote(t *testing.T) {
	if q := quote("it's"); q != `'it'\''s'` {
		t.Errorf("quote: %s", q)
	}
}

func TestHBALines(t *testing.T) {
	hs := func(names ...string) []*host {
		var out []*host
		for _, n := range names {
			out = append(out, &host{Host: Host{Target: Target{"root", n, "22"}}})
		}
		return out
	}
	if got := hbaLines(hs("10.0.0.2", "fd00::3")); !slices.Equal(got, []string{"host velo velo 10.0.0.2/32 scram-sha-256", "host velo velo fd00::3/128 scram-sha-256"}) {
		t.Errorf("addresses: %q", got)
	}
	if got := hbaLines(hs("10.0.0.2", "db.example")); len(got) != 2 || !strings.Contains(got[0], "0.0.0.0/0") {
		t.Errorf("a host by name: %q, want any address (with the password)", got)
	}
}

func TestPublicURL(t *testing.T) {
	router := &host{Host: Host{Target: Target{"admin", "10.0.0.2", "22"}}}
	for _, c := range []struct {
		o      Options
		domain string
		router *host
		want   string
	}{
		{Options{}, "", router, "http://10.0.0.2:8080"},
		// No TLS is set up, so a domain is not https:// unless said.
		{Options{}, "apps.example.com", router, "http://apps.example.com:8080"},
		{Options{PublicURL: "https://apps.example.com/"}, "apps.example.com", router, "https://apps.example.com"},
		{Options{}, "", nil, ""},
	} {
		if got := publicURL(c.o, c.domain, c.router); got != c.want {
			t.Errorf("publicURL(%+v, %q): %q, want %q", c.o, c.domain, got, c.want)
		}
	}
	for _, o := range []Options{{PublicURL: "apps.example.com"}, {PublicURL: "ftp://x"}, {Domain: "https://apps.example.com"}, {Domain: "localhost"}} {
		o.Hosts = []Host{{Target: Target{"admin", "10.0.0.2", "22"}}}
		if err := validate(o); err == nil {
			t.Errorf("validate(%+v): no error", o)
		}
	}
}
