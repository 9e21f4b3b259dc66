package deploymgr

import (
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/github"
)

// The end-to-end tests of the GitHub integration (a real Velo and the
// githubtest stand-in) are in cmd/velo/github_test.go; this is the pure
// filter that decides which pushes deploy.
func TestIgnorePush(t *testing.T) {
	const sha = "0123456789abcdef0123456789abcdef01234567"
	base := github.Push{InstallationID: 1, Owner: "o", Repo: "r", FullName: "o/r", DefaultBranch: "trunk", Ref: "refs/heads/trunk", After: sha}
	for _, tc := range []struct {
		name string
		edit func(p *github.Push)
		want string // "" deploys; else a word of the reason
	}{
		{"default branch", func(*github.Push) {}, ""},
		{"default branch named main", func(p *github.Push) { p.DefaultBranch, p.Ref = "main", "refs/heads/main" }, ""},
		{"main is not the default", func(p *github.Push) { p.Ref = "refs/heads/main" }, "not the default branch"},
		{"other branch", func(p *github.Push) { p.Ref = "refs/heads/feature" }, "not the default branch"},
		{"branch named like the default under tags", func(p *github.Push) { p.Ref = "refs/tags/trunk" }, "tag"},
		{"tag", func(p *github.Push) { p.Ref = "refs/tags/v1" }, "tag"},
		{"deleted default branch", func(p *github.Push) { p.Deleted = true }, "deleted"},
		{"no installation", func(p *github.Push) { p.InstallationID = 0 }, "installation"},
		{"no default branch in payload", func(p *github.Push) { p.DefaultBranch = "" }, "not the default branch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			tc.edit(&p)
			got := ignorePush(&p)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("ignorePush = %q, want %q", got, tc.want)
			}
		})
	}
}
