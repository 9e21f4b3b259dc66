package manifest

import (
	"strings"
	"testing"
	"time"
)

func TestParseEvents(t *testing.T) {
	m, err := Parse([]byte(`
[events]
max_attempts = 3
backoff = "250ms"
concurrency = 2
max_queued = 50
verify = "hmac-sha256"
header = "X-Signature"
prefix = "sha256="
secret = "HOOK_KEY"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Events{MaxAttempts: 3, Backoff: 250 * time.Millisecond, Concurrency: 2, MaxQueued: 50,
		Verify: VerifyHMACSHA256, Header: "X-Signature", Prefix: "sha256=", Secret: "HOOK_KEY"}
	if m.Events != want {
		t.Errorf("Events = %+v, want %+v", m.Events, want)
	}
	d := Events{}.WithDefaults()
	if d.MaxAttempts != 5 || d.Backoff != time.Second || d.Concurrency != 4 || d.MaxQueued != EventMaxQueued || d.Header != "" {
		t.Errorf("defaults = %+v", d)
	}
	if h := (Events{Verify: VerifyHMACSHA256}).WithDefaults().Header; h != "X-Hub-Signature-256" {
		t.Errorf("default signature header = %q", h)
	}
}

func TestParseEventsErrors(t *testing.T) {
	for _, tc := range []struct{ toml, key string }{
		{"[events]\nmax_attempts = 0", "events.max_attempts"},
		{"[events]\nmax_attempts = \"3\"", "events.max_attempts"},
		{"[events]\nconcurrency = -1", "events.concurrency"},
		{"[events]\nbackoff = \"soon\"", "events.backoff"},
		{"[events]\nbackoff = \"2h\"", "events.backoff"},
		{"[events]\nverify = \"md5\"\nsecret = \"K\"", "events.verify"},
		{"[events]\nverify = \"hmac-sha256\"", "events.secret"},
		{"[events]\nheader = \"X-Sig\"", "events.verify"},
		{"[events]\nverify = \"hmac-sha256\"\nsecret = \"K\"\nheader = \"X-Velo-Auth\"", "events.header"},
		{"[events]\nverify = \"hmac-sha256\"\nsecret = \"a-b\"", "events.secret"},
		{"[events]\nretries = 3", "events.retries"},
		{"events = 3", "events"},
	} {
		_, err := Parse([]byte(tc.toml))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", tc.toml, err, tc.key)
		}
	}
}
