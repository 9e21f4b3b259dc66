package auth

import "strings"

// VeloCookie reports whether a cookie name is one of Velo's own: velo_…,
// also with the __Host- or __Secure- prefix browsers enforce (compared
// without regard to case, as browsers compare the prefixes). The router
// removes these from requests to components and drops a component's
// Set-Cookie of them: under /fn/NAME/ a component shares the dashboard's
// origin, and must neither read a visitor's session nor plant one.
func VeloCookie(name string) bool {
	for _, p := range [...]string{"__Host-", "__Secure-"} {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
			name = name[len(p):]
			break
		}
	}
	return len(name) >= 5 && strings.EqualFold(name[:5], "velo_")
}
