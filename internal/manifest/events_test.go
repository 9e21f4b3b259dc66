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

func TestParseSchedules(t *testing.T) {
	m, err := Parse([]byte(`
[[schedule]]
cron = "*/5 * * * *"
path = "/tick"

[[schedule]]
cron = "@every 30s"
method = "get"
timezone = "Europe/Paris"
body = "{}"
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Schedules) != 2 || m.Schedules[0] != (Schedule{Cron: "*/5 * * * *", Path: "/tick", Method: "POST"}) ||
		m.Schedules[1] != (Schedule{Cron: "@every 30s", Path: "/", Method: "GET", Timezone: "Europe/Paris", Body: "{}"}) {
		t.Errorf("Schedules = %+v", m.Schedules)
	}
	spec, err := Schedule{Cron: "0 9 * * *", Timezone: "Europe/Paris"}.Spec()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	if got, want := spec.Next(from), time.Date(2026, 1, 11, 8, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("next 09:00 Paris after %v = %v, want %v", from, got, want)
	}
}

func TestParseSchedulesErrors(t *testing.T) {
	for _, tc := range []struct{ toml, key, reason string }{
		{"[[schedule]]\ncron = \"*/5 * * *\"", "schedule[0].cron", "expected exactly 5 fields"},
		{"[[schedule]]\ncron = \"61 * * * *\"", "schedule[0].cron", "above maximum"},
		{"[[schedule]]\ncron = \"@sometimes\"", "schedule[0].cron", "unrecognized descriptor"},
		{"[[schedule]]\ncron = \"@every 10ms\"", "schedule[0].cron", "at least every second"},
		{"[[schedule]]\npath = \"/x\"", "schedule[0].cron", "is required"},
		{"[[schedule]]\ncron = \"@hourly\"\n[[schedule]]\ncron = \"@daily\"\ntimezone = \"Mars/Olympus\"", "schedule[1].timezone", "not a known timezone"},
		{"[[schedule]]\ncron = \"@hourly\"\npath = \"tick\"", "schedule[0].path", "starting with /"},
		{"[[schedule]]\ncron = \"@hourly\"\nmethod = \"P OST\"", "schedule[0].method", "not an HTTP method"},
		{"[[schedule]]\ncron = \"@hourly\"\nevery = \"1h\"", "schedule[0].every", "unknown key"},
		{"schedule = \"@hourly\"", "schedule", "array of tables"},
	} {
		_, err := Parse([]byte(tc.toml))
		if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("Parse(%q) = %v, want an error naming %s: %s", tc.toml, err, tc.key, tc.reason)
		}
	}
}
