package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Bounds every manifest value must respect.
const (
	MaxTimeout = 15 * time.Minute
	MinMemory  = 1 << 20
	MaxMemory  = 4 << 30
	MaxScale   = 100
	// MaxConcurrency bounds concurrency: a worker's own cap on calls in
	// flight (VELO_WORKER_MAX_INFLIGHT) is the real limit past this.
	MaxConcurrency = 10000
)

// topKeys are the keys velo.toml may hold at its top level.
var topKeys = []string{"name", "runtime", "module", "build", "port", "timeout", "memory", "concurrency", "env", "scale",
	"allowed_hosts", "http_max_concurrency", "health", "auto_rollback", "events", "domains", "schedule"}

// scaleKeys are the keys the [scale] table may hold.
var scaleKeys = []string{"min", "max"}

// Parse reads velo.toml strictly. It returns only what the file says: keys
// left out stay zero (Load applies the defaults). Explicit values are checked
// against their bounds; every error names the key it is about.
func Parse(data []byte) (Manifest, error) {
	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Manifest{}, fmt.Errorf("%s: line %d: %s", FileName, pe.Position.Line, pe.Message)
		}
		return Manifest{}, fmt.Errorf("%s: %w", FileName, err)
	}
	// Keys are checked against an allowlist, exactly and in document order,
	// so the first unknown key in the file is the one reported. Decoding
	// into a struct and asking MetaData.Undecoded would match keys
	// case-insensitively ("Name" for "name"), which is not strict.
	for _, k := range md.Keys() {
		if !knownKey(k) {
			return Manifest{}, unknownKey(k)
		}
	}

	var m Manifest
	if v, ok := raw["name"]; ok {
		s, err := str("name", v)
		if err != nil {
			return Manifest{}, err
		}
		if err := ValidName(s); err != nil {
			return Manifest{}, keyErr("name", "%v", err)
		}
		m.Name = s
	}
	if v, ok := raw["runtime"]; ok {
		s, err := str("runtime", v)
		if err != nil {
			return Manifest{}, err
		}
		if err := checkRuntime(s); err != nil {
			return Manifest{}, err
		}
		m.Runtime = s
	}
	if v, ok := raw["module"]; ok {
		s, err := str("module", v)
		if err != nil {
			return Manifest{}, err
		}
		if m.Module, err = cleanModule(s); err != nil {
			return Manifest{}, err
		}
	}
	if v, ok := raw["build"]; ok {
		s, err := str("build", v)
		if err != nil {
			return Manifest{}, err
		}
		m.Build = s
	}
	if v, ok := raw["port"]; ok {
		n, err := integer("port", v)
		if err != nil {
			return Manifest{}, err
		}
		if err := checkPort(n); err != nil {
			return Manifest{}, err
		}
		m.Port = int(n)
	}
	if v, ok := raw["timeout"]; ok {
		s, ok := v.(string)
		if !ok {
			return Manifest{}, keyErr("timeout", `must be a duration string like "10s", not %s`, typeName(v))
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return Manifest{}, keyErr("timeout", "%q is not a duration", s)
		}
		if err := checkTimeout(d); err != nil {
			return Manifest{}, err
		}
		m.Timeout = d
	}
	if v, ok := raw["memory"]; ok {
		n, err := memory(v)
		if err != nil {
			return Manifest{}, err
		}
		if err := checkMemory(n); err != nil {
			return Manifest{}, err
		}
		m.Memory = n
	}
	if v, ok := raw["concurrency"]; ok {
		n, err := integer("concurrency", v)
		if err != nil {
			return Manifest{}, err
		}
		if err := checkConcurrency(n); err != nil {
			return Manifest{}, err
		}
		m.Concurrency = int(n)
	}
	if v, ok := raw["env"]; ok {
		env, err := parseEnv(v)
		if err != nil {
			return Manifest{}, err
		}
		m.Env = env
	}
	if v, ok := raw["scale"]; ok {
		s, err := parseScale(v)
		if err != nil {
			return Manifest{}, err
		}
		m.Scale = s
	}
	if err := parseWAGI(raw, &m); err != nil {
		return Manifest{}, err
	}
	if err := parseOutbound(raw, &m); err != nil {
		return Manifest{}, err
	}
	if err := parseRollout(raw, &m); err != nil {
		return Manifest{}, err
	}
	if err := parseDomains(raw, &m); err != nil {
		return Manifest{}, err
	}
	if err := parseGateway(raw, &m); err != nil {
		return Manifest{}, err
	}
	if err := parseEvents(raw, &m); err != nil {
		return Manifest{}, err
	}
	if err := parseSchedules(raw, &m); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Validate checks a resolved manifest, as Load returns it: every required
// value set and every value within bounds. It does not look at the
// component's files.
func (m Manifest) Validate() error {
	if err := ValidName(m.Name); err != nil {
		return keyErr("name", "%v", err)
	}
	if err := checkRuntime(m.Runtime); err != nil {
		return err
	}
	switch m.Runtime {
	case WASM:
		if m.Module == "" {
			return keyErr("module", "must be set for the wasm runtime")
		}
		if clean, err := cleanModule(m.Module); err != nil {
			return err
		} else if clean != m.Module {
			return keyErr("module", "%q is not a clean path (want %q)", m.Module, clean)
		}
		if m.Port != 0 {
			if err := checkPort(int64(m.Port)); err != nil {
				return err
			}
		}
	case Docker:
		if err := checkPort(int64(m.Port)); err != nil {
			return err
		}
	}
	if err := checkTimeout(m.Timeout); err != nil {
		return err
	}
	if err := checkMemory(m.Memory); err != nil {
		return err
	}
	if err := checkConcurrency(int64(m.Concurrency)); err != nil {
		return err
	}
	if err := m.validateWAGI(); err != nil {
		return err
	}
	for _, k := range sortedKeys(m.Env) {
		if !validEnvName(k) {
			return keyErr("env", "%q is not a valid variable name (want [A-Za-z_][A-Za-z0-9_]*)", k)
		}
	}
	if err := checkScale(m.Scale, true, true); err != nil {
		return err
	}
	if m.Health != nil {
		if err := m.Health.validate(); err != nil {
			return err
		}
	}
	if err := m.validateDomains(); err != nil {
		return err
	}
	if err := m.validateGateway(); err != nil {
		return err
	}
	return m.validateOutbound()
}

// ValidName reports whether name is a valid component name: a DNS label of
// 1 to 63 characters, lowercase a-z, 0-9 and '-', starting with a letter and
// not ending with '-'. The error says what is wrong.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("a name must not be empty")
	case len(name) > 63:
		return fmt.Errorf("%q is %d characters long; a name has at most 63", name, len(name))
	case name[0] < 'a' || name[0] > 'z':
		return fmt.Errorf("%q must start with a lowercase letter a-z", name)
	}
	for _, r := range name {
		if !nameChar(r) {
			return fmt.Errorf("%q contains %q; a name may only hold a-z, 0-9 and '-'", name, r)
		}
	}
	if name[len(name)-1] == '-' {
		return fmt.Errorf("%q must not end with '-'", name)
	}
	return nil
}

func nameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-'
}

// knownKey reports whether k is, or lies under, a key velo.toml may hold.
// Values under a known key of the wrong shape are reported by the type
// checks, which say more than "unknown key" would.
func knownKey(k toml.Key) bool {
	if len(k) > 0 && slices.Contains(gatewayKeys, k[0]) {
		return knownGatewayKey(k)
	}
	if len(k) == 0 || !slices.Contains(topKeys, k[0]) && !knownWAGIKey(k[0]) {
		return false
	}
	if k[0] == "scale" && len(k) > 1 {
		return slices.Contains(scaleKeys, k[1])
	}
	if k[0] == "schedule" && len(k) > 1 {
		return len(k) == 2 // checked by parseSchedules, which names the table
	}
	if k[0] == "events" && len(k) > 1 {
		return len(k) == 2 && slices.Contains(eventKeys, k[1])
	}
	return true
}

func unknownKey(k toml.Key) error {
	name := k.String()
	candidates := append(append(slices.Clip(topKeys), wagiKeys...), gatewayKeys...)
	last := k[len(k)-1]
	switch {
	case len(k) == 2 && k[0] == "scale":
		candidates = scaleKeys
	case len(k) == 2 && k[0] == "access":
		candidates = accessKeys
	case len(k) == 2 && k[0] == "limits":
		candidates = limitsKeys
	}
	for _, c := range candidates {
		if len(k) <= 2 && editDistance(last, c) <= 2 && len(c) > 2 {
			if len(k) == 2 {
				c = k[0] + "." + c
			}
			return fmt.Errorf("%s: unknown key %q (did you mean %q?)", FileName, name, c)
		}
	}
	return fmt.Errorf("%s: unknown key %q", FileName, name)
}

// editDistance is the Levenshtein distance between a and b, used only to
// suggest a key for a typo.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func keyErr(key, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", FileName, key, fmt.Sprintf(format, args...))
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case map[string]any:
		return "table"
	case []map[string]any:
		return "array of tables"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

func str(key string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", keyErr(key, "must be a string, not %s", typeName(v))
	}
	return s, nil
}

func integer(key string, v any) (int64, error) {
	n, ok := v.(int64)
	if !ok {
		return 0, keyErr(key, "must be an integer, not %s", typeName(v))
	}
	return n, nil
}

func checkRuntime(s string) error {
	if s != WASM && s != Docker {
		return keyErr("runtime", "%q is not a runtime; use %q or %q", s, WASM, Docker)
	}
	return nil
}

// cleanModule turns a module path as written ("./hello.wasm") into the
// fs.FS path it names ("hello.wasm"), refusing paths that leave the tree.
func cleanModule(s string) (string, error) {
	if s == "" {
		return "", keyErr("module", "must not be empty")
	}
	clean := path.Clean(s)
	if strings.HasPrefix(s, "/") || strings.Contains(s, `\`) || clean == "." || !fs.ValidPath(clean) {
		return "", keyErr("module", "%q must be a relative path to a file inside the component", s)
	}
	return clean, nil
}

func checkPort(n int64) error {
	if n < 1 || n > 65535 {
		return keyErr("port", "%d is out of range 1-65535", n)
	}
	return nil
}

func checkTimeout(d time.Duration) error {
	if d <= 0 {
		return keyErr("timeout", "%v must be positive", d)
	}
	if d > MaxTimeout {
		return keyErr("timeout", "%v exceeds the maximum of %v", d, MaxTimeout)
	}
	return nil
}

func checkMemory(n int64) error {
	if n < MinMemory {
		return keyErr("memory", "%s is below the minimum of 1MiB", FormatSize(n))
	}
	if n > MaxMemory {
		return keyErr("memory", "%s exceeds the maximum of 4GiB", FormatSize(n))
	}
	return nil
}

func checkConcurrency(n int64) error {
	if n < 1 || n > MaxConcurrency {
		return keyErr("concurrency", "%d is out of range 1-%d (calls at once per worker)", n, MaxConcurrency)
	}
	return nil
}

// sizeUnits maps the suffixes memory accepts to their multipliers. Units
// are matched case-insensitively; "MB" is decimal, "MiB" binary.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1000,
	"mb":  1000 * 1000,
	"gb":  1000 * 1000 * 1000,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
}

// memory reads a memory value: an integer of bytes or a string such as
// "128MiB", "64MB", "1GiB", "512KiB".
func memory(v any) (int64, error) {
	switch v := v.(type) {
	case int64:
		return v, nil
	case string:
		n, err := ParseSize(v)
		if err != nil {
			return 0, keyErr("memory", `%q is not a size (want e.g. "128MiB", "64MB", "1GiB" or a number of bytes)`, v)
		}
		return n, nil
	}
	return 0, keyErr("memory", "must be a size string or a number of bytes, not %s", typeName(v))
}

// ParseSize reads a byte size written as an integer followed by an optional
// unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024),
// case-insensitive, optionally separated by one space.
func ParseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q does not start with a number", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	unit := s[i:]
	if strings.HasPrefix(unit, " ") {
		unit = unit[1:]
		if unit == "" {
			return 0, fmt.Errorf("size %q has a space but no unit", s)
		}
	}
	mul, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q has an unknown unit", s)
	}
	if n > math.MaxInt64/mul {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mul, nil
}

// FormatSize writes n bytes in the largest binary unit that divides it
// exactly, so ParseSize(FormatSize(n)) == n.
func FormatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n != 0 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n != 0 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func parseEnv(v any) (map[string]string, error) {
	t, ok := v.(map[string]any)
	if !ok {
		return nil, keyErr("env", "must be a table, not %s", typeName(v))
	}
	env := make(map[string]string, len(t))
	for _, k := range sortedKeys(t) {
		if !validEnvName(k) {
			return nil, keyErr("env", "%q is not a valid variable name (want [A-Za-z_][A-Za-z0-9_]*)", k)
		}
		s, ok := t[k].(string)
		if !ok {
			return nil, keyErr("env."+k, "must be a string, not %s (quote it)", typeName(t[k]))
		}
		env[k] = s
	}
	return env, nil
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func parseScale(v any) (Scale, error) {
	t, ok := v.(map[string]any)
	if !ok {
		return Scale{}, keyErr("scale", "must be a table, not %s", typeName(v))
	}
	var s Scale
	vmin, minSet := t["min"]
	if minSet {
		n, err := integer("scale.min", vmin)
		if err != nil {
			return Scale{}, err
		}
		if n < 0 || n > MaxScale {
			return Scale{}, keyErr("scale.min", "%d is out of range 0-%d", n, MaxScale)
		}
		s.Min = int(n)
	}
	vmax, maxSet := t["max"]
	if maxSet {
		n, err := integer("scale.max", vmax)
		if err != nil {
			return Scale{}, err
		}
		if n < 1 || n > MaxScale {
			return Scale{}, keyErr("scale.max", "%d is out of range 1-%d", n, MaxScale)
		}
		s.Max = int(n)
	}
	return s, checkScale(s, minSet, maxSet)
}

// checkScale checks the values that are set, and their order when both are.
func checkScale(s Scale, minSet, maxSet bool) error {
	if minSet && (s.Min < 0 || s.Min > MaxScale) {
		return keyErr("scale.min", "%d is out of range 0-%d", s.Min, MaxScale)
	}
	if maxSet && (s.Max < 1 || s.Max > MaxScale) {
		return keyErr("scale.max", "%d is out of range 1-%d", s.Max, MaxScale)
	}
	if minSet && maxSet && s.Min > s.Max {
		return keyErr("scale", "min %d is greater than max %d", s.Min, s.Max)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// PreviewSep separates a component's name from the number of the pull
// request a preview of it deploys: NAME--pr-N.
const PreviewSep = "--pr-"

// PreviewOf splits the name of a preview, NAME--pr-N, into NAME and N; ok
// is false for any other name.
func PreviewOf(name string) (parent string, number int, ok bool) {
	i := strings.LastIndex(name, PreviewSep)
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(name[i+len(PreviewSep):])
	if err != nil || n <= 0 || strconv.Itoa(n) != name[i+len(PreviewSep):] {
		return "", 0, false
	}
	return name[:i], n, true
}
