package manifest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRollout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Manifest
	}{
		{`health = "/healthz"`, Manifest{Health: &Health{Path: "/healthz", Timeout: DefaultHealthTimeout, Expect: DefaultExpect}}},
		{"[health]\npath = \"/up\"\ntimeout = \"3s\"\nexpect = \"200-204\"", Manifest{Health: &Health{Path: "/up", Timeout: 3 * time.Second, Expect: [2]int{200, 204}}}},
		{"health = { path = \"/up\", expect = 204 }", Manifest{Health: &Health{Path: "/up", Timeout: DefaultHealthTimeout, Expect: [2]int{204, 204}}}},
		{`auto_rollback = false`, Manifest{AutoRollback: AutoRollback{Off: true}}},
		{`auto_rollback = true`, Manifest{}},
		{`auto_rollback = "5m"`, Manifest{AutoRollback: AutoRollback{Watch: 5 * time.Minute}}},
	} {
		got, err := Parse([]byte(tc.in))
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if w := (AutoRollback{}).Window(); w != DefaultWatch {
		t.Errorf("default watch window %v, want %v", w, DefaultWatch)
	}
	if w := (AutoRollback{Off: true, Watch: time.Hour}).Window(); w != 0 {
		t.Errorf("watch window when off: %v, want 0", w)
	}
}

func TestParseRolloutErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`health = "healthz"`, "health: \"healthz\" must be a path"},
		{`health = "/a?b"`, "health: \"/a?b\" must be a path"},
		{`health = 200`, "health: must be a path"},
		{"[health]\ntimeout = \"1s\"", "health.path: must be set"},
		{"[health]\npath = \"/h\"\nexpected = 200", "health.expected: unknown key"},
		{"[health]\npath = \"/h\"\ntimeout = \"soon\"", "health.timeout: \"soon\" is not a duration"},
		{"[health]\npath = \"/h\"\ntimeout = \"1h\"", "health.timeout: 1h0m0s is out of range"},
		{"[health]\npath = \"/h\"\nexpect = \"299-200\"", "health.expect: 299-200"},
		{"[health]\npath = \"/h\"\nexpect = \"ok\"", "health.expect: \"ok\" is not a status"},
		{`auto_rollback = "never"`, "auto_rollback: \"never\" is not a duration"},
		{`auto_rollback = "-1m"`, "auto_rollback: watch window -1m0s is out of range"},
		{`auto_rollback = 3`, "auto_rollback: must be true, false or a duration"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
}
