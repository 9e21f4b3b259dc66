package manifest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Health is a deployment's health check (the health key): a GET of Path
// that must answer a status within Expect before the deployment goes live,
// on every worker it is placed on, trying again until Timeout has passed.
// For Docker components it is also the readiness check of every container.
type Health struct {
	Path    string        `json:"path"`
	Timeout time.Duration `json:"timeout"`
	// Expect is the range of statuses that pass, both ends included.
	Expect [2]int `json:"expect"`
}

// Rollout defaults.
const (
	DefaultHealthTimeout = 10 * time.Second
	MaxHealthTimeout     = 5 * time.Minute
	// DefaultWatch is how long after promotion a deployment's error rate
	// is compared with the previous one's (auto_rollback).
	DefaultWatch = 2 * time.Minute
	MaxWatch     = 24 * time.Hour
)

// DefaultExpect is the statuses a health check passes with when expect
// is not given: any success or redirect.
var DefaultExpect = [2]int{200, 399}

// AutoRollback says whether and how long a new deployment is watched after
// it goes live (the auto_rollback key: true, false or a duration string,
// the watch window). Off is false when the key is left out.
type AutoRollback struct {
	Off   bool          `json:"off,omitempty"`
	Watch time.Duration `json:"watch,omitempty"` // 0: DefaultWatch
}

// Window is how long after promotion the deployment is watched; 0 when
// automatic rollback is off.
func (a AutoRollback) Window() time.Duration {
	switch {
	case a.Off:
		return 0
	case a.Watch > 0:
		return a.Watch
	}
	return DefaultWatch
}

// healthKeys are the keys a health table may hold.
var healthKeys = []string{"path", "timeout", "expect"}

func parseRollout(raw map[string]any, m *Manifest) error {
	if v, ok := raw["health"]; ok {
		h, err := parseHealth(v)
		if err != nil {
			return err
		}
		m.Health = &h
	}
	if v, ok := raw["auto_rollback"]; ok {
		switch v := v.(type) {
		case bool:
			m.AutoRollback.Off = !v
		case string:
			d, err := time.ParseDuration(v)
			if err != nil {
				return keyErr("auto_rollback", "%q is not a duration (want true, false or the watch window, like \"5m\")", v)
			}
			if d <= 0 || d > MaxWatch {
				return keyErr("auto_rollback", "watch window %v is out of range (0, %v]", d, MaxWatch)
			}
			m.AutoRollback.Watch = d
		default:
			return keyErr("auto_rollback", "must be true, false or a duration string, not %s", typeName(v))
		}
	}
	return nil
}

// parseHealth reads health = "/path" or a table of path, timeout, expect.
func parseHealth(v any) (Health, error) {
	h := Health{Timeout: DefaultHealthTimeout, Expect: DefaultExpect}
	switch v := v.(type) {
	case string:
		h.Path = v
	case map[string]any:
		for k := range v {
			if !slices.Contains(healthKeys, k) {
				return Health{}, keyErr("health."+k, "unknown key (a health table holds path, timeout and expect)")
			}
		}
		p, ok := v["path"]
		if !ok {
			return Health{}, keyErr("health.path", "must be set")
		}
		s, err := str("health.path", p)
		if err != nil {
			return Health{}, err
		}
		h.Path = s
		if t, ok := v["timeout"]; ok {
			s, err := str("health.timeout", t)
			if err != nil {
				return Health{}, err
			}
			d, err := time.ParseDuration(s)
			if err != nil {
				return Health{}, keyErr("health.timeout", "%q is not a duration", s)
			}
			h.Timeout = d
		}
		if e, ok := v["expect"]; ok {
			r, err := parseExpect(e)
			if err != nil {
				return Health{}, err
			}
			h.Expect = r
		}
	default:
		return Health{}, keyErr("health", "must be a path like \"/healthz\" or a table, not %s", typeName(v))
	}
	return h, h.validate()
}

// parseExpect reads expect = 200, "200" or "200-299".
func parseExpect(v any) ([2]int, error) {
	var s string
	switch v := v.(type) {
	case int64:
		s = strconv.FormatInt(v, 10)
	case string:
		s = v
	default:
		return [2]int{}, keyErr("health.expect", "must be a status or a range like \"200-299\", not %s", typeName(v))
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := a, error(nil)
	if isRange {
		b, err2 = strconv.Atoi(strings.TrimSpace(hi))
	}
	if err1 != nil || err2 != nil {
		return [2]int{}, keyErr("health.expect", "%q is not a status or a range like \"200-299\"", s)
	}
	return [2]int{a, b}, nil
}

func (h Health) validate() error {
	if !strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \t\r\n?#") {
		return keyErr("health", "%q must be a path starting with / (no query, no spaces)", h.Path)
	}
	if h.Timeout <= 0 || h.Timeout > MaxHealthTimeout {
		return keyErr("health.timeout", "%v is out of range (0, %v]", h.Timeout, MaxHealthTimeout)
	}
	if h.Expect[0] < 100 || h.Expect[1] > 599 || h.Expect[0] > h.Expect[1] {
		return keyErr("health.expect", "%d-%d is not a range of HTTP statuses (100-599, low first)", h.Expect[0], h.Expect[1])
	}
	return nil
}

// Passes reports whether status passes the check.
func (h Health) Passes(status int) bool { return status >= h.Expect[0] && status <= h.Expect[1] }

// String describes the check for logs: "GET /healthz expecting 200-399".
func (h Health) String() string {
	return fmt.Sprintf("GET %s expecting %d-%d", h.Path, h.Expect[0], h.Expect[1])
}
