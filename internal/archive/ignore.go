package archive

import (
	"path"
	"strings"
)

// Ignore is a list of ignore rules in the common subset of .gitignore:
//
//   - blank lines and lines starting with '#' are skipped; trailing spaces
//     are trimmed; `\#` and `\!` start a pattern with a literal '#' or '!';
//   - a leading '!' re-includes what an earlier rule excluded (the last
//     matching rule wins; as in git, nothing inside an excluded directory
//     can be re-included, since the directory is not walked);
//   - a trailing '/' makes the rule match directories only;
//   - a pattern with a '/' at its start or middle is anchored at the root;
//     one without matches a name at any depth;
//   - within a path element, '*', '?' and '[...]' work as in path.Match
//     (never matching '/');
//   - a "**" element matches any number of elements: "**/x" is x at any
//     depth, "a/**/b" is b anywhere under a, "a/**" is everything inside a.
//
// Not supported: per-directory ignore files and global excludes.
type Ignore struct {
	rules []rule
}

type rule struct {
	neg     bool
	dirOnly bool
	elems   []string // "**" matches zero or more path elements
}

// ParseIgnore reads ignore rules. Malformed patterns (an unclosed '[') are
// skipped, as git does.
func ParseIgnore(data []byte) *Ignore {
	ig := &Ignore{}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimRight(line, "\r\n")
		line = strings.TrimRight(line, " \t")
		if line == "" || line[0] == '#' {
			continue
		}
		var r rule
		switch {
		case line[0] == '!':
			r.neg, line = true, line[1:]
		case strings.HasPrefix(line, `\#`), strings.HasPrefix(line, `\!`):
			line = line[1:]
		}
		if strings.HasSuffix(line, "/") {
			r.dirOnly = true
			line = strings.TrimRight(line, "/")
		}
		anchored := strings.Contains(line, "/")
		if !anchored {
			r.elems = append(r.elems, "**")
		}
		ok := true
		for elem := range strings.SplitSeq(strings.TrimPrefix(line, "/"), "/") {
			if elem == "" {
				continue
			}
			if _, err := path.Match(elem, ""); err != nil {
				ok = false
			}
			r.elems = append(r.elems, elem)
		}
		if ok && len(r.elems) > 0 && !(len(r.elems) == 1 && r.elems[0] == "**" && !anchored) {
			ig.rules = append(ig.rules, r)
		}
	}
	return ig
}

// Match reports whether the slash-separated path p, relative to the root,
// is ignored. isDir says whether p is a directory.
func (ig *Ignore) Match(p string, isDir bool) bool {
	elems := strings.Split(p, "/")
	ignored := false
	for _, r := range ig.rules {
		if r.dirOnly && !isDir {
			continue
		}
		if matchElems(r.elems, elems) {
			ignored = !r.neg
		}
	}
	return ignored
}

func matchElems(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			if len(rest) == 0 {
				return len(name) > 0 // "a/**" is what is inside a, not a
			}
			for i := range len(name) + 1 {
				if matchElems(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

// MatchGlob reports whether the slash-separated path p, relative to the
// root, matches pattern, anchored at the root, with the element rules of
// Ignore: '*', '?' and '[...]' within an element as in path.Match, and a
// "**" element for any number of elements ("static/**" is everything
// inside static). A malformed pattern matches nothing. Manifests use it for
// `files`, so that one glob dialect serves both ignore files and manifests.
func MatchGlob(pattern, p string) bool {
	var elems []string
	for elem := range strings.SplitSeq(pattern, "/") {
		if elem == "" {
			continue
		}
		if _, err := path.Match(elem, ""); err != nil {
			return false
		}
		elems = append(elems, elem)
	}
	return len(elems) > 0 && matchElems(elems, strings.Split(p, "/"))
}
