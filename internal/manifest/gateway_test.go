package manifest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseGateway(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Manifest
	}{
		{"public by default", "[access]\n", Manifest{}},
		{"public said", "[access]\npublic = true\n", Manifest{}},
		{"keys only", "[access]\npublic = false\n", Manifest{Access: &Access{}}},
		{"jwt", "[access]\njwks = \"https://id.example.com/jwks.json\"\nissuer = \"https://id.example.com/\"\naudience = \"api\"\n",
			Manifest{Access: &Access{JWKS: "https://id.example.com/jwks.json", Issuer: "https://id.example.com/", Audience: "api"}}},
		{"jwt on loopback http", "[access]\njwks = \"http://127.0.0.1:9/k\"\nissuer = \"i\"\naudience = \"a\"\n",
			Manifest{Access: &Access{JWKS: "http://127.0.0.1:9/k", Issuer: "i", Audience: "a"}}},
		{"dashboard off", "[access]\ndashboard = false\n", Manifest{}},
		{"dashboard", "[access]\ndashboard = true\n", Manifest{Access: &Access{Dashboard: true}}},
		{"limits", "[limits]\nrate = \"100/m\"\n", Manifest{Limits: &Limits{Count: 100, Per: time.Minute, Burst: 100, By: ByIP}}},
		{"limits by key", "[access]\npublic = false\n[limits]\nrate = \"10/30s\"\nburst = 3\nby = \"key\"\n",
			Manifest{Access: &Access{}, Limits: &Limits{Count: 10, Per: 30 * time.Second, Burst: 3, By: ByKey}}},
		{"openapi", "openapi = \"./api/openapi.yaml\"\nvalidate = true\n", Manifest{OpenAPI: "api/openapi.yaml", ValidateCalls: true}},
	} {
		got, err := Parse([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v (access %+v, limits %+v), want %+v", tc.name, got, got.Access, got.Limits, tc.want)
		}
	}
}

func TestParseGatewayBad(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[access]\npublic = true\njwks = \"https://x/k\"\nissuer = \"i\"\naudience = \"a\"\n", "access.public: true, but"},
		{"[access]\ndashboard = true\npublic = true\n", "access.public: true, but jwks or dashboard make the component private"},
		{"[access]\npublik = false\n", `unknown key "access.publik" (did you mean "access.public"?)`},
		{"[access]\njwks = \"https://x/k\"\n", "access.issuer: not set"},
		{"[access]\nissuer = \"i\"\naudience = \"a\"\n", "access.jwks: not set"},
		{"[access]\njwks = \"http://id.example.com/k\"\nissuer = \"i\"\naudience = \"a\"\n", "http only on a loopback address"},
		{"[access]\njwks = \"ftp://x/k\"\nissuer = \"i\"\naudience = \"a\"\n", "must be an https URL"},
		{"[limits]\nrate = \"fast\"\n", `limits.rate: "fast" is not a rate`},
		{"[limits]\nrate = \"0/m\"\n", "limits.rate"},
		{"[limits]\nrate = \"5/week\"\n", "limits.rate"},
		{"[limits]\nburst = 5\n", "limits.rate: not set"},
		{"[limits]\nrate = \"5/s\"\nburst = 0\n", "limits.burst: 0 is out of range"},
		{"[limits]\nrate = \"5/s\"\nby = \"cookie\"\n", `limits.by: "cookie" is not one of`},
		{"[limits]\nrate = \"5/s\"\nby = \"key\"\n", "limits.by: \"key\" needs a private component"},
		{"validate = true\n", "validate: needs an openapi document"},
		{"openapi = \"/etc/passwd\"\n", "openapi: \"/etc/passwd\" must be a relative path"},
		{"openapi = \"../x.yaml\"\n", "openapi:"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to say %q", tc.in, err, tc.want)
		}
	}
}
