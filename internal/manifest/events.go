package manifest

import (
	"strings"
	"time"
)

// Events is the [events] table: how a component's queued calls (async
// calls, inbound events, schedule ticks) are run. Zero values mean the
// defaults (the Event* constants), applied where the calls run, so that
// manifests stored before the table existed keep working.
type Events struct {
	// MaxAttempts is how many times a call is tried before it is dead.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Backoff is the wait before the first retry, doubled for each next
	// one (with jitter, capped at EventMaxBackoff).
	Backoff time.Duration `json:"backoff,omitempty"`
	// Concurrency is how many of the component's queued calls run at once
	// across the cluster.
	Concurrency int `json:"concurrency,omitempty"`
	// MaxQueued bounds the calls waiting in the component's queue; more
	// are refused with 429.
	MaxQueued int `json:"max_queued,omitempty"`
	// Verify, when "hmac-sha256", makes POST /events/NAME/… check the
	// signature in Header (hex, after Prefix) of the body, keyed by the
	// component's secret named Secret.
	Verify string `json:"verify,omitempty"`
	Header string `json:"header,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Secret string `json:"secret,omitempty"`
}

// Defaults and bounds of [events].
const (
	EventMaxAttempts = 5
	EventBackoff     = time.Second
	EventConcurrency = 4
	EventMaxQueued   = 10000
	EventMaxBackoff  = time.Hour
	// EventVerifyHeader is the signature header when [events] verify is set
	// and header is not (GitHub's).
	EventVerifyHeader = "X-Hub-Signature-256"
	VerifyHMACSHA256  = "hmac-sha256"

	maxEventAttempts = 100
	maxEventQueued   = 1_000_000
)

// eventKeys are the keys [events] may hold.
var eventKeys = []string{"max_attempts", "backoff", "concurrency", "max_queued", "verify", "header", "prefix", "secret"}

// WithDefaults returns e with every zero value replaced by its default.
func (e Events) WithDefaults() Events {
	if e.MaxAttempts == 0 {
		e.MaxAttempts = EventMaxAttempts
	}
	if e.Backoff == 0 {
		e.Backoff = EventBackoff
	}
	if e.Concurrency == 0 {
		e.Concurrency = EventConcurrency
	}
	if e.MaxQueued == 0 {
		e.MaxQueued = EventMaxQueued
	}
	if e.Verify != "" && e.Header == "" {
		e.Header = EventVerifyHeader
	}
	return e
}

func parseEvents(raw map[string]any, m *Manifest) error {
	v, ok := raw["events"]
	if !ok {
		return nil
	}
	t, ok := v.(map[string]any)
	if !ok {
		return keyErr("events", "must be a table, not %s", typeName(v))
	}
	var e Events
	for _, k := range []struct {
		key string
		dst *int
		max int64
	}{{"max_attempts", &e.MaxAttempts, maxEventAttempts}, {"concurrency", &e.Concurrency, MaxConcurrency},
		{"max_queued", &e.MaxQueued, maxEventQueued}} {
		v, ok := t[k.key]
		if !ok {
			continue
		}
		n, err := integer("events."+k.key, v)
		if err != nil {
			return err
		}
		if n < 1 || n > k.max {
			return keyErr("events."+k.key, "%d is out of range (1 to %d)", n, k.max)
		}
		*k.dst = int(n)
	}
	if v, ok := t["backoff"]; ok {
		s, ok := v.(string)
		if !ok {
			return keyErr("events.backoff", `must be a duration string like "1s", not %s`, typeName(v))
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return keyErr("events.backoff", "%q is not a duration", s)
		}
		if d < 10*time.Millisecond || d > EventMaxBackoff {
			return keyErr("events.backoff", "%v is out of range (10ms to %v)", d, EventMaxBackoff)
		}
		e.Backoff = d
	}
	for _, k := range []struct {
		key string
		dst *string
	}{{"verify", &e.Verify}, {"header", &e.Header}, {"prefix", &e.Prefix}, {"secret", &e.Secret}} {
		if v, ok := t[k.key]; ok {
			s, err := str("events."+k.key, v)
			if err != nil {
				return err
			}
			*k.dst = s
		}
	}
	if err := e.checkVerify(); err != nil {
		return err
	}
	m.Events = e
	return nil
}

// checkVerify checks the signature settings of [events].
func (e Events) checkVerify() error {
	switch e.Verify {
	case "":
		if e.Header != "" || e.Prefix != "" || e.Secret != "" {
			return keyErr("events.verify", `must be %q when header, prefix or secret is set`, VerifyHMACSHA256)
		}
		return nil
	case VerifyHMACSHA256:
	default:
		return keyErr("events.verify", "%q is not supported (want %q)", e.Verify, VerifyHMACSHA256)
	}
	if e.Secret == "" {
		return keyErr("events.secret", "must name the secret holding the signing key (velo secrets set NAME KEY=…)")
	}
	if e.Header != "" && (strings.ContainsAny(e.Header, " :\r\n") || strings.HasPrefix(strings.ToLower(e.Header), "x-velo-")) {
		return keyErr("events.header", "%q is not a header name a webhook may sign in", e.Header)
	}
	if strings.ContainsAny(e.Prefix, "\r\n") {
		return keyErr("events.prefix", "must be a single line")
	}
	for _, r := range e.Secret {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return keyErr("events.secret", "%q is not a secret name", e.Secret)
		}
	}
	return nil
}
