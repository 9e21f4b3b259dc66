package manifest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseOutbound(t *testing.T) {
	got, err := Parse([]byte(`allowed_hosts = ["https://API.example.com", "http://127.0.0.1:9000", "https://api.example.com:443/", "http://[::1]:8080", "http://h.test:80"]
http_max_concurrency = 2`))
	if err != nil {
		t.Fatal(err)
	}
	want := Manifest{
		AllowedHosts:       []string{"https://api.example.com", "http://127.0.0.1:9000", "http://[::1]:8080", "http://h.test"},
		HTTPMaxConcurrency: 2,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestParseOutboundBad(t *testing.T) {
	tests := []struct{ in, want string }{
		{`allowed_hosts = "https://a.example"`, `velo.toml: allowed_hosts: must be an array of origins`},
		{`allowed_hosts = [1]`, `velo.toml: allowed_hosts[0]: must be a string, not integer`},
		{`allowed_hosts = ["insecure:allow-all"]`, `"insecure:allow-all" is not accepted: list each origin`},
		{`allowed_hosts = ["api.example.com"]`, `must start with http:// or https://`},
		{`allowed_hosts = ["ftp://api.example.com"]`, `must start with http:// or https://`},
		{`allowed_hosts = ["https://api.example.com/v1"]`, `without a path or query`},
		{`allowed_hosts = ["https://api.example.com?x=1"]`, `without a path or query`},
		{`allowed_hosts = ["https://u:p@api.example.com"]`, `user name or password`},
		{`allowed_hosts = ["https://*.example.com"]`, `wildcards are not accepted`},
		{`allowed_hosts = ["http://127.1"]`, `neither an IP address nor a host name`},
		{`allowed_hosts = ["http://2130706433"]`, `neither an IP address nor a host name`},
		{`allowed_hosts = ["http://0x7f.0.0.1"]`, `neither an IP address nor a host name`},
		{`allowed_hosts = ["http://a_b.example"]`, `not a valid host name`},
		{`allowed_hosts = ["http://a.example:0"]`, `out of range 1-65535`},
		{`allowed_hosts = ["http://a.example:70000"]`, `out of range 1-65535`},
		{`allowed_hosts = ["http://a.example:"]`, `empty port`},
		{`allowed_hosts = ["http://[fe80::1%25eth0]"]`, `zone`},
		{`allowed_hosts = ["http://"]`, `has no host`},
		{`allowed_hosts = [` + strings.Repeat(`"http://a.example",`, MaxAllowedHosts+1) + `]`, `entries; at most 64`},
		{`http_max_concurrency = 0`, `velo.toml: http_max_concurrency: 0 is out of range 1-64`},
		{`http_max_concurrency = "2"`, `velo.toml: http_max_concurrency: must be an integer`},
		{"runtime = \"docker\"\nallowed_hosts = [\"https://a.example\"]", `velo.toml: allowed_hosts: applies to wasm components only`},
		{"runtime = \"docker\"\nhttp_max_concurrency = 2", `velo.toml: http_max_concurrency: applies to wasm components only`},
		{`allowed_host = []`, `unknown key "allowed_host" (did you mean "allowed_hosts"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%s) = %v, want an error containing %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestValidateOutbound(t *testing.T) {
	base := Manifest{Name: "a", Runtime: WASM, Module: "m.wasm", Timeout: DefaultTimeout, Memory: DefaultMemory, Concurrency: DefaultConcurrency, Scale: Scale{Max: 1}}
	ok := base
	ok.AllowedHosts = []string{"https://api.example.com", "http://127.0.0.1:9000"}
	ok.HTTPMaxConcurrency = 4
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, bad := range []Manifest{
		func() Manifest { m := base; m.AllowedHosts = []string{"https://api.example.com:443"}; return m }(),
		func() Manifest { m := base; m.AllowedHosts = []string{"https://*.example.com"}; return m }(),
		func() Manifest { m := base; m.HTTPMaxConcurrency = -1; return m }(),
		func() Manifest {
			m := base
			m.Runtime, m.Module, m.Port, m.AllowedHosts = Docker, "", 8080, []string{"https://a.example"}
			return m
		}(),
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) passed", bad)
		}
	}
}
