package github

import (
	"strings"
	"time"

	gh "github.com/google/go-github/v50/github"
)

// CommitInfo is what Velo shows of a commit.
type CommitInfo struct {
	SHA     string
	Message string
	// Author is the commit author's name as recorded in git.
	Author string
	// AuthorLogin is the GitHub account GitHub matched the author to; may
	// be empty.
	AuthorLogin string
	Time        time.Time
	URL         string
}

// Installation is one installation of the App on a user or organization.
type Installation struct {
	ID int64
	// Account is the login of the user or organization the App is
	// installed on; AccountType is "User" or "Organization".
	Account     string
	AccountID   int64
	AccountType string
	// RepositorySelection is "all" or "selected".
	RepositorySelection string
	HTMLURL             string
}

// Repo is a repository as Velo tracks it. Repositories listed in
// installation webhooks carry only ID, Name, FullName and Private; Owner is
// then derived from FullName and DefaultBranch is empty.
type Repo struct {
	ID            int64
	Owner         string
	Name          string
	FullName      string
	DefaultBranch string
	Private       bool
	HTMLURL       string
}

func installationFrom(in *gh.Installation) Installation {
	out := Installation{
		ID:                  in.GetID(),
		AccountID:           in.GetAccount().GetID(),
		Account:             in.GetAccount().GetLogin(),
		AccountType:         in.GetAccount().GetType(),
		RepositorySelection: in.GetRepositorySelection(),
		HTMLURL:             in.GetHTMLURL(),
	}
	if out.AccountType == "" {
		out.AccountType = in.GetTargetType()
	}
	return out
}

func repoFrom(r *gh.Repository) Repo {
	out := Repo{
		ID:            r.GetID(),
		Owner:         r.GetOwner().GetLogin(),
		Name:          r.GetName(),
		FullName:      r.GetFullName(),
		DefaultBranch: r.GetDefaultBranch(),
		Private:       r.GetPrivate(),
		HTMLURL:       r.GetHTMLURL(),
	}
	if out.FullName == "" && out.Owner != "" {
		out.FullName = out.Owner + "/" + out.Name
	}
	if out.Owner == "" {
		if owner, _, ok := strings.Cut(out.FullName, "/"); ok {
			out.Owner = owner
		}
	}
	return out
}

func reposFrom(rs []*gh.Repository) []Repo {
	out := make([]Repo, 0, len(rs))
	for _, r := range rs {
		out = append(out, repoFrom(r))
	}
	return out
}
