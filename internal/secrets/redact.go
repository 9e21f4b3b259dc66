package secrets

import (
	"cmp"
	"slices"
	"strings"
)

// MinRedacted is the shortest value (or line of a multi-line value) that
// is redacted from logs: shorter ones cannot be told apart from ordinary
// text, and replacing every "a" or "42" in a log would ruin it.
const MinRedacted = 4

// Redactor replaces a component's secret values in the lines it logs with
// "[secret NAME]". A nil *Redactor redacts nothing. It is immutable and
// safe for concurrent use.
type Redactor struct {
	r *strings.Replacer
	// first holds the first byte of every pattern: a line without any of
	// them is returned as is without running the replacer.
	first [256]bool
}

// NewRedactor returns a Redactor for the values (name → value), or nil
// when none is long enough to redact. A value of several lines is also
// redacted line by line, since logs are stored one line at a time.
func NewRedactor(values map[string]string) *Redactor {
	type pattern struct{ old, name string }
	var ps []pattern
	seen := map[string]bool{}
	add := func(old, name string) {
		if len(old) >= MinRedacted && !seen[old] {
			seen[old] = true
			ps = append(ps, pattern{old, name})
		}
	}
	for name, v := range values {
		add(v, name)
		if strings.ContainsAny(v, "\r\n") {
			for line := range strings.Lines(v) {
				add(strings.TrimRight(line, "\r\n"), name)
			}
		}
	}
	if len(ps) == 0 {
		return nil
	}
	// The replacer tries patterns in argument order at each position:
	// longest first, so a value containing another is replaced whole.
	slices.SortFunc(ps, func(a, b pattern) int {
		return cmp.Or(cmp.Compare(len(b.old), len(a.old)), strings.Compare(a.old, b.old))
	})
	red := &Redactor{}
	args := make([]string, 0, 2*len(ps))
	for _, p := range ps {
		args = append(args, p.old, "[secret "+p.name+"]")
		red.first[p.old[0]] = true
	}
	red.r = strings.NewReplacer(args...)
	return red
}

// Line returns line with every secret value in it replaced.
func (r *Redactor) Line(line string) string {
	if r == nil {
		return line
	}
	for i := 0; i < len(line); i++ {
		if r.first[line[i]] {
			return r.r.Replace(line)
		}
	}
	return line
}
