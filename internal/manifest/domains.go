package manifest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxDomains bounds the custom domains of one component.
const MaxDomains = 16

// parseDomains reads domains: the host names the component answers on
// besides NAME.<VELO_DOMAIN>, lowercased.
func parseDomains(raw map[string]any, m *Manifest) error {
	v, ok := raw["domains"]
	if !ok {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		return keyErr("domains", `must be an array of host names like ["api.example.com"], not %s`, typeName(v))
	}
	if len(list) > MaxDomains {
		return keyErr("domains", "%d entries; at most %d", len(list), MaxDomains)
	}
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return keyErr(fmt.Sprintf("domains[%d]", i), "must be a string, not %s", typeName(e))
		}
		d := strings.ToLower(s)
		if err := CheckDomain(d); err != nil {
			return keyErr(fmt.Sprintf("domains[%d]", i), "%q: %v", s, err)
		}
		if slices.Contains(m.Domains, d) {
			return keyErr(fmt.Sprintf("domains[%d]", i), "%q is listed twice", s)
		}
		m.Domains = append(m.Domains, d)
	}
	return nil
}

// validateDomains checks the domains of a resolved manifest.
func (m Manifest) validateDomains() error {
	if len(m.Domains) > MaxDomains {
		return keyErr("domains", "%d entries; at most %d", len(m.Domains), MaxDomains)
	}
	for i, d := range m.Domains {
		if err := CheckDomain(d); err != nil {
			return keyErr(fmt.Sprintf("domains[%d]", i), "%q: %v", d, err)
		}
		if slices.Contains(m.Domains[:i], d) {
			return keyErr(fmt.Sprintf("domains[%d]", i), "%q is listed twice", d)
		}
	}
	return nil
}

// CheckDomain reports whether d is a host name a component may claim: a
// lowercase DNS name of at least two labels (each 1 to 63 of a-z, 0-9 and
// '-', not starting or ending with '-'), at most 253 characters, not an IP
// address, no wildcard, no trailing dot.
func CheckDomain(d string) error {
	switch {
	case d == "":
		return fmt.Errorf("empty")
	case len(d) > 253:
		return fmt.Errorf("longer than 253 characters")
	case strings.HasPrefix(d, "*"):
		return fmt.Errorf("wildcards are not supported: list each name")
	case strings.HasSuffix(d, "."):
		return fmt.Errorf("no trailing dot")
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return fmt.Errorf("an IP address, not a host name")
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("want a full name like api.example.com")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("label %q: want 1 to 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q: only a-z, 0-9 and '-'", l)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("the last label is all digits")
	}
	return nil
}
