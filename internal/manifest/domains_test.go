package manifest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseDomains(t *testing.T) {
	got, err := Parse([]byte(`domains = ["API.example.com", "www.example.co.uk", "x-1.a.example"]`))
	if err != nil {
		t.Fatal(err)
	}
	want := Manifest{Domains: []string{"api.example.com", "www.example.co.uk", "x-1.a.example"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if err := (Manifest{Name: "a", Runtime: WASM, Module: "a.wasm", Timeout: DefaultTimeout, Memory: DefaultMemory, Concurrency: 1, Scale: Scale{Max: 1},
		Domains: got.Domains}).Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestParseDomainsBad(t *testing.T) {
	tests := []struct{ in, want string }{
		{`domains = "api.example.com"`, `velo.toml: domains: must be an array of host names`},
		{`domains = [1]`, `velo.toml: domains[0]: must be a string, not integer`},
		{`domains = ["*.example.com"]`, `wildcards are not supported`},
		{`domains = ["example"]`, `want a full name`},
		{`domains = ["api.example.com."]`, `no trailing dot`},
		{`domains = ["127.0.0.1"]`, `an IP address`},
		{`domains = ["a_b.example.com"]`, `only a-z, 0-9 and '-'`},
		{`domains = ["-a.example.com"]`, `starts or ends with '-'`},
		{`domains = ["a..example.com"]`, `want 1 to 63 characters`},
		{`domains = ["1.2.3.4444"]`, `all digits`},
		{`domains = ["a.example.com", "A.example.com"]`, `domains[1]: "A.example.com" is listed twice`},
		{`domains = ["` + strings.Repeat("a", 64) + `.example.com"]`, `want 1 to 63 characters`},
		{`domains = [` + strings.Repeat(`"a.example.com", `, 17) + `]`, `17 entries; at most 16`},
		{`domain = ["a.example.com"]`, `unknown key "domain" (did you mean "domains"?)`},
	}
	for _, tc := range tests {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
	m := Manifest{Name: "a", Runtime: WASM, Module: "a.wasm", Timeout: DefaultTimeout, Memory: DefaultMemory, Concurrency: 1, Scale: Scale{Max: 1}, Domains: []string{"Upper.example.com"}}
	if err := m.Validate(); err == nil {
		t.Error("Validate accepted an uppercase domain")
	}
}
