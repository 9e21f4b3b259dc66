package manifest

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Bounds of the outbound HTTP keys.
const (
	MaxAllowedHosts       = 64
	MaxHTTPMaxConcurrency = 64
)

// allowAllHosts is the wildcard wasi-experimental-http and WAGI accept.
// Velo refuses it: every origin a component calls is listed.
const allowAllHosts = "insecure:allow-all"

// Origin is one entry of allowed_hosts: the scheme, host and port a module
// may send requests to. Host is lower case, an IP address in its canonical
// form (IPv6 without brackets); Port is always set (80 or 443 when the entry
// leaves it out).
type Origin struct {
	Scheme string
	Host   string
	Port   uint16
}

// String writes the origin as allowed_hosts holds it once normalized,
// leaving out the scheme's default port.
func (o Origin) String() string {
	host := o.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if o.Port == defaultPort(o.Scheme) {
		return o.Scheme + "://" + host
	}
	return o.Scheme + "://" + host + ":" + strconv.Itoa(int(o.Port))
}

func defaultPort(scheme string) uint16 {
	if scheme == "https" {
		return 443
	}
	return 80
}

// ParseOrigin reads an allowed_hosts entry: "http://" or "https://", a host
// (a DNS name or an IP address, IPv6 in brackets) and an optional port,
// nothing else: no path, query, user name or wildcard.
func ParseOrigin(s string) (Origin, error) {
	if s == allowAllHosts {
		return Origin{}, fmt.Errorf("%q is not accepted: list each origin the component calls", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Origin{}, fmt.Errorf("%q is not a URL", s)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Opaque != "" || !strings.Contains(s, "://") {
		return Origin{}, fmt.Errorf("%q must start with http:// or https://", s)
	}
	switch {
	case u.User != nil:
		return Origin{}, fmt.Errorf("%q must not hold a user name or password", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return Origin{}, fmt.Errorf("%q must be an origin (scheme://host[:port]) without a path or query", s)
	}
	o := Origin{Scheme: scheme, Port: defaultPort(scheme)}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Origin{}, fmt.Errorf("%q: port %q is out of range 1-65535", s, p)
		}
		o.Port = uint16(n)
	} else if strings.HasSuffix(u.Host, ":") {
		return Origin{}, fmt.Errorf("%q: empty port", s)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return Origin{}, fmt.Errorf("%q has no host", s)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return Origin{}, fmt.Errorf("%q: an address with a zone is not accepted", s)
		}
		o.Host = addr.String()
		return o, nil
	}
	if strings.Contains(host, "*") {
		return Origin{}, fmt.Errorf("%q: wildcards are not accepted; list each host", s)
	}
	if err := checkHostName(host); err != nil {
		return Origin{}, fmt.Errorf("%q: %v", s, err)
	}
	o.Host = host
	return o, nil
}

// checkHostName accepts DNS names of letters, digits and '-' whose last
// label is not all digits, so that no spelling of an IPv4 address ("127.1",
// "0x7f.0.0.1", "2130706433") passes as a name.
func checkHostName(host string) error {
	if len(host) > 253 {
		return fmt.Errorf("host name longer than 253 characters")
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a valid host name", host)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%q is not a valid host name", host)
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" || strings.HasPrefix(last, "0x") {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

// parseOutbound reads allowed_hosts and http_max_concurrency into m.
func parseOutbound(raw map[string]any, m *Manifest) error {
	if v, ok := raw["allowed_hosts"]; ok {
		list, ok := v.([]any)
		if !ok {
			return keyErr("allowed_hosts", `must be an array of origins like ["https://api.example.com"], not %s`, typeName(v))
		}
		if len(list) > MaxAllowedHosts {
			return keyErr("allowed_hosts", "%d entries; at most %d", len(list), MaxAllowedHosts)
		}
		hosts := make([]string, 0, len(list))
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				return keyErr(fmt.Sprintf("allowed_hosts[%d]", i), "must be a string, not %s", typeName(e))
			}
			o, err := ParseOrigin(s)
			if err != nil {
				return keyErr(fmt.Sprintf("allowed_hosts[%d]", i), "%v", err)
			}
			if n := o.String(); !slices.Contains(hosts, n) {
				hosts = append(hosts, n)
			}
		}
		m.AllowedHosts = hosts
	}
	if v, ok := raw["http_max_concurrency"]; ok {
		n, err := integer("http_max_concurrency", v)
		if err != nil {
			return err
		}
		if err := checkHTTPConcurrency(n); err != nil {
			return err
		}
		m.HTTPMaxConcurrency = int(n)
	}
	if m.Runtime == Docker {
		return outboundOnlyWASM(*m)
	}
	return nil
}

// validateOutbound checks the outbound keys of a resolved manifest.
func (m Manifest) validateOutbound() error {
	if m.Runtime == Docker {
		if err := outboundOnlyWASM(m); err != nil {
			return err
		}
	}
	if len(m.AllowedHosts) > MaxAllowedHosts {
		return keyErr("allowed_hosts", "%d entries; at most %d", len(m.AllowedHosts), MaxAllowedHosts)
	}
	for i, s := range m.AllowedHosts {
		o, err := ParseOrigin(s)
		if err != nil {
			return keyErr(fmt.Sprintf("allowed_hosts[%d]", i), "%v", err)
		}
		if o.String() != s {
			return keyErr(fmt.Sprintf("allowed_hosts[%d]", i), "%q is not normalized (want %q)", s, o.String())
		}
	}
	if m.HTTPMaxConcurrency != 0 {
		return checkHTTPConcurrency(int64(m.HTTPMaxConcurrency))
	}
	return nil
}

func checkHTTPConcurrency(n int64) error {
	if n < 1 || n > MaxHTTPMaxConcurrency {
		return keyErr("http_max_concurrency", "%d is out of range 1-%d", n, MaxHTTPMaxConcurrency)
	}
	return nil
}

// outboundOnlyWASM refuses the outbound keys on a docker component, whose
// container has a network of its own that they would not govern.
func outboundOnlyWASM(m Manifest) error {
	switch {
	case len(m.AllowedHosts) > 0:
		return keyErr("allowed_hosts", "applies to wasm components only; a Docker component reaches the network through its container")
	case m.HTTPMaxConcurrency != 0:
		return keyErr("http_max_concurrency", "applies to wasm components only")
	}
	return nil
}
