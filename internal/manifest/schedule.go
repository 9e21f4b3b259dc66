package manifest

import (
	"fmt"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // timezone names resolve on hosts without a zoneinfo database

	"github.com/robfig/cron/v3"
)

// Schedule is one [[schedule]] table: the component is called on a cron
// schedule, once per tick across the whole cluster.
type Schedule struct {
	// Cron is five fields ("*/5 * * * *") or a descriptor ("@hourly",
	// "@every 30s").
	Cron string `json:"cron"`
	// Timezone is an IANA name ("Europe/Paris"); default UTC.
	Timezone string `json:"timezone,omitempty"`
	// Path is called under the component (default "/").
	Path string `json:"path"`
	// Method defaults to POST.
	Method string `json:"method"`
	Body   string `json:"body,omitempty"`
}

// MaxSchedules bounds the [[schedule]] tables of a component.
const MaxSchedules = 50

// scheduleKeys are the keys a [[schedule]] table may hold.
var scheduleKeys = []string{"cron", "timezone", "path", "method", "body"}

// cronParser reads five fields and the descriptors (@every, @hourly, …).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Spec parses the schedule: when it ticks, in its timezone.
func (s Schedule) Spec() (cron.Schedule, error) {
	loc := time.UTC
	if s.Timezone != "" {
		var err error
		if loc, err = time.LoadLocation(s.Timezone); err != nil {
			return nil, fmt.Errorf("timezone %q: unknown", s.Timezone)
		}
	}
	spec := s.Cron
	if !strings.HasPrefix(spec, "@every") {
		spec = "CRON_TZ=" + loc.String() + " " + spec
	}
	sch, err := cronParser.Parse(spec)
	if err != nil {
		return nil, err
	}
	return sch, nil
}

// Key names the schedule among the component's: its index and what it
// does, so that an edited schedule counts as a new one.
func (s Schedule) Key(i int) string {
	return fmt.Sprintf("%d %s %s %s %s", i, s.Cron, s.Timezone, s.Method, s.Path)
}

func parseSchedules(raw map[string]any, m *Manifest) error {
	v, ok := raw["schedule"]
	if !ok {
		return nil
	}
	list, ok := v.([]map[string]any)
	if !ok {
		return keyErr("schedule", "must be an array of tables ([[schedule]]), not %s", typeName(v))
	}
	if len(list) > MaxSchedules {
		return keyErr("schedule", "%d schedules; at most %d", len(list), MaxSchedules)
	}
	for i, t := range list {
		key := func(k string) string { return fmt.Sprintf("schedule[%d].%s", i, k) }
		var s Schedule
		for k, v := range t {
			if !slices.Contains(scheduleKeys, k) {
				return fmt.Errorf("%s: unknown key %q", FileName, key(k))
			}
			str, err := str(key(k), v)
			if err != nil {
				return err
			}
			switch k {
			case "cron":
				s.Cron = strings.TrimSpace(str)
			case "timezone":
				s.Timezone = str
			case "path":
				s.Path = str
			case "method":
				s.Method = strings.ToUpper(str)
			case "body":
				s.Body = str
			}
		}
		if s.Cron == "" {
			return keyErr(key("cron"), `is required, like "*/5 * * * *" or "@every 30s"`)
		}
		if strings.HasPrefix(s.Cron, "TZ=") || strings.HasPrefix(s.Cron, "CRON_TZ=") {
			return keyErr(key("cron"), "set the timezone with timezone =, not in the expression")
		}
		if s.Timezone != "" {
			if _, err := time.LoadLocation(s.Timezone); err != nil {
				return keyErr(key("timezone"), "%q is not a known timezone (want an IANA name like \"Europe/Paris\")", s.Timezone)
			}
		}
		if _, err := s.Spec(); err != nil {
			return keyErr(key("cron"), "%q: %v", s.Cron, err)
		}
		if strings.HasPrefix(s.Cron, "@every") {
			d, _ := time.ParseDuration(strings.TrimSpace(strings.TrimPrefix(s.Cron, "@every")))
			if d < time.Second {
				return keyErr(key("cron"), "%q: at least every second", s.Cron)
			}
		}
		if s.Path == "" {
			s.Path = "/"
		}
		if !strings.HasPrefix(s.Path, "/") || strings.ContainsAny(s.Path, " \r\n#") {
			return keyErr(key("path"), "%q must be a path starting with /", s.Path)
		}
		if s.Method == "" {
			s.Method = "POST"
		}
		if !validMethod(s.Method) {
			return keyErr(key("method"), "%q is not an HTTP method", s.Method)
		}
		if len(s.Body) > 64<<10 {
			return keyErr(key("body"), "%d bytes; at most 64 KiB", len(s.Body))
		}
		m.Schedules = append(m.Schedules, s)
	}
	return nil
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, r := range m {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}
