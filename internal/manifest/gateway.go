package manifest

import (
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The gateway keys of velo.toml: who may call a component, how often, and
// what its API is. The router enforces them (see router/gate.go).
//
//	openapi = "openapi.yaml"   # an OpenAPI 3 document in the component
//	validate = true            # the router refuses calls that do not match it
//	[access]
//	public = false             # only callers with one of the component's API keys
//	jwks = "https://issuer.example.com/.well-known/jwks.json"   # or JWTs it signed
//	issuer = "https://issuer.example.com/"
//	audience = "my-api"
//	dashboard = true           # users signed in to the dashboard who reach the repository
//	[limits]
//	rate = "100/m"             # calls per client
//	burst = 20                 # at once (default: the rate's count)
//	by = "ip"                  # "ip" | "key" | "subject"
var gatewayKeys = []string{"access", "limits", "openapi", "validate"}

var (
	accessKeys = []string{"public", "jwks", "issuer", "audience", "dashboard"}
	limitsKeys = []string{"rate", "burst", "by"}
)

// Access says who may call a private component. A nil *Access is a public
// component, as every component was before the key existed. A private one
// takes its API keys (velo keys create), and JWTs or dashboard sessions
// when those are configured.
type Access struct {
	// JWKS is where the keys checking bearer JWTs are published; Issuer
	// and Audience are the iss and aud a token must carry. All three are
	// set, or none.
	JWKS     string `json:"jwks,omitempty"`
	Issuer   string `json:"issuer,omitempty"`
	Audience string `json:"audience,omitempty"`
	// Dashboard admits users signed in to Velo's dashboard who reach
	// the component's repository.
	Dashboard bool `json:"dashboard,omitempty"`
}

// Limits is a component's rate limit: Count calls per Per for each client,
// at most Burst at once, clients told apart By.
type Limits struct {
	Count int           `json:"count"`
	Per   time.Duration `json:"per"`
	Burst int           `json:"burst"`
	By    string        `json:"by"`
}

// What Limits.By may be.
const (
	ByIP      = "ip"
	ByKey     = "key"
	BySubject = "subject"
)

// Bounds of the gateway keys.
const (
	MaxRateCount = 1_000_000
	MaxBurst     = 1_000_000
	// MaxOpenAPI bounds an OpenAPI document's size.
	MaxOpenAPI = 4 << 20
)

func knownGatewayKey(k []string) bool {
	if !slices.Contains(gatewayKeys, k[0]) {
		return false
	}
	if len(k) > 1 {
		switch k[0] {
		case "access":
			return slices.Contains(accessKeys, k[1])
		case "limits":
			return slices.Contains(limitsKeys, k[1])
		}
	}
	return true
}

// parseGateway reads the gateway keys into m.
func parseGateway(raw map[string]any, m *Manifest) error {
	if v, ok := raw["openapi"]; ok {
		s, err := str("openapi", v)
		if err != nil {
			return err
		}
		clean := path.Clean(s)
		if s == "" || strings.HasPrefix(s, "/") || strings.Contains(s, `\`) || !fs.ValidPath(clean) || clean == "." {
			return keyErr("openapi", "%q must be a relative path to a file inside the component", s)
		}
		m.OpenAPI = clean
	}
	if v, ok := raw["validate"]; ok {
		b, ok := v.(bool)
		if !ok {
			return keyErr("validate", "must be a boolean, not %s", typeName(v))
		}
		if b && m.OpenAPI == "" {
			return keyErr("validate", "needs an openapi document to validate against; set openapi")
		}
		m.ValidateCalls = b
	}
	if v, ok := raw["access"]; ok {
		a, err := parseAccess(v)
		if err != nil {
			return err
		}
		m.Access = a
	}
	if v, ok := raw["limits"]; ok {
		l, err := parseLimits(v)
		if err != nil {
			return err
		}
		if l.By != ByIP && m.Access == nil {
			return keyErr("limits.by", "%q needs a private component ([access]); a public one only knows its callers by ip", l.By)
		}
		m.Limits = l
	}
	return nil
}

func parseAccess(v any) (*Access, error) {
	t, ok := v.(map[string]any)
	if !ok {
		return nil, keyErr("access", "must be a table, not %s", typeName(v))
	}
	var a Access
	for _, k := range []string{"jwks", "issuer", "audience"} {
		if v, ok := t[k]; ok {
			s, err := str("access."+k, v)
			if err != nil {
				return nil, err
			}
			if s == "" {
				return nil, keyErr("access."+k, "must not be empty")
			}
			switch k {
			case "jwks":
				a.JWKS = s
			case "issuer":
				a.Issuer = s
			case "audience":
				a.Audience = s
			}
		}
	}
	if v, ok := t["dashboard"]; ok {
		b, ok := v.(bool)
		if !ok {
			return nil, keyErr("access.dashboard", "must be a boolean, not %s", typeName(v))
		}
		a.Dashboard = b
	}
	public := a == Access{}
	if v, ok := t["public"]; ok {
		b, ok := v.(bool)
		if !ok {
			return nil, keyErr("access.public", "must be a boolean, not %s", typeName(v))
		}
		if b && !public {
			return nil, keyErr("access.public", "true, but jwks or dashboard make the component private; remove public or set it to false")
		}
		public = b
	}
	if err := a.check(); err != nil {
		return nil, err
	}
	if public {
		return nil, nil
	}
	return &a, nil
}

// check checks the JWT settings: all three or none, the JWKS on https or
// (for development) on http at a loopback address.
func (a *Access) check() error {
	set := 0
	for _, s := range []string{a.JWKS, a.Issuer, a.Audience} {
		if s != "" {
			set++
		}
	}
	switch {
	case set == 0:
		return nil
	case a.JWKS == "":
		return keyErr("access.jwks", "not set, but issuer or audience is: JWTs are checked against the keys a JWKS URL publishes")
	case a.Issuer == "":
		return keyErr("access.issuer", "not set, but jwks is: a JWT must name the issuer it comes from")
	case a.Audience == "":
		return keyErr("access.audience", "not set, but jwks is: a JWT must name the component's audience")
	}
	u, err := url.Parse(a.JWKS)
	if err != nil || u.Host == "" || u.User != nil {
		return keyErr("access.jwks", "%q is not an absolute URL", a.JWKS)
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return keyErr("access.jwks", "%q: http only on a loopback address (for development); use https", a.JWKS)
		}
	default:
		return keyErr("access.jwks", "%q must be an https URL", a.JWKS)
	}
	return nil
}

func parseLimits(v any) (*Limits, error) {
	t, ok := v.(map[string]any)
	if !ok {
		return nil, keyErr("limits", "must be a table, not %s", typeName(v))
	}
	rv, ok := t["rate"]
	if !ok {
		return nil, keyErr("limits.rate", `not set: say how many calls per client, like "100/m"`)
	}
	s, err := str("limits.rate", rv)
	if err != nil {
		return nil, err
	}
	l, err := ParseRate(s)
	if err != nil {
		return nil, keyErr("limits.rate", "%v", err)
	}
	l.Burst = l.Count
	if v, ok := t["burst"]; ok {
		n, err := integer("limits.burst", v)
		if err != nil {
			return nil, err
		}
		if n < 1 || n > MaxBurst {
			return nil, keyErr("limits.burst", "%d is out of range 1-%d", n, MaxBurst)
		}
		l.Burst = int(n)
	}
	l.By = ByIP
	if v, ok := t["by"]; ok {
		s, err := str("limits.by", v)
		if err != nil {
			return nil, err
		}
		if s != ByIP && s != ByKey && s != BySubject {
			return nil, keyErr("limits.by", "%q is not one of %q, %q, %q", s, ByIP, ByKey, BySubject)
		}
		l.By = s
	}
	return &l, nil
}

// ParseRate reads a rate: a count of calls, "/", and a unit (s, m, h) or
// a duration ("100/m", "5/s", "1000/h", "10/30s").
func ParseRate(s string) (Limits, error) {
	count, per, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n < 1 || n > MaxRateCount {
		return Limits{}, fmt.Errorf(`%q is not a rate (want a count of 1-%d, "/" and s, m, h or a duration, like "100/m")`, s, MaxRateCount)
	}
	var d time.Duration
	switch per {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	case "d":
		d = 24 * time.Hour
	default:
		d, err = time.ParseDuration(per)
		if err != nil || d < time.Millisecond || d > 24*time.Hour {
			return Limits{}, fmt.Errorf(`%q is not a rate (want a count, "/" and s, m, h or a duration of 1ms-24h, like "100/m")`, s)
		}
	}
	return Limits{Count: n, Per: d}, nil
}

// validateGateway checks the gateway keys of a resolved manifest.
func (m Manifest) validateGateway() error {
	if m.ValidateCalls && m.OpenAPI == "" {
		return keyErr("validate", "needs an openapi document to validate against; set openapi")
	}
	if m.Access != nil {
		if err := m.Access.check(); err != nil {
			return err
		}
	}
	if l := m.Limits; l != nil {
		switch {
		case l.Count < 1 || l.Count > MaxRateCount || l.Per <= 0:
			return keyErr("limits.rate", "%d/%v is out of range", l.Count, l.Per)
		case l.Burst < 1 || l.Burst > MaxBurst:
			return keyErr("limits.burst", "%d is out of range 1-%d", l.Burst, MaxBurst)
		case l.By != ByIP && l.By != ByKey && l.By != BySubject:
			return keyErr("limits.by", "%q is not one of %q, %q, %q", l.By, ByIP, ByKey, BySubject)
		case l.By != ByIP && m.Access == nil:
			return keyErr("limits.by", "%q needs a private component ([access])", l.By)
		}
	}
	return nil
}

// String writes the limit as a rate: "100 calls per 1m0s".
func (l Limits) String() string { return fmt.Sprintf("%d calls per %v", l.Count, l.Per) }
