package github

import (
	"context"
	"fmt"

	gh "github.com/google/go-github/v50/github"
)

// Comparison statuses, as GitHub's compare API names them: head is ahead
// of base (base is an ancestor of head), behind it (head is an ancestor of
// base), identical, or the two diverged from a merge base.
const (
	CompareAhead     = "ahead"
	CompareBehind    = "behind"
	CompareIdentical = "identical"
	CompareDiverged  = "diverged"
)

// MaxCompareFiles is the most files GitHub lists in a comparison; a longer
// list is cut there without saying so.
const MaxCompareFiles = 300

// Comparison is GitHub's answer to "compare base...head".
type Comparison struct {
	Status   string
	AheadBy  int
	BehindBy int
	// Files are the paths changed between the merge base and head (a
	// renamed file counts under both names).
	Files []string
	// FilesTruncated says GitHub listed MaxCompareFiles files: there may
	// be more.
	FilesTruncated bool
}

// Compare compares two commits of owner/repo (GET
// /repos/{owner}/{repo}/compare/{base}...{head}). ErrNotFound: one of them
// is not in the repository (or no longer: a force-push away and collected).
func (a *App) Compare(ctx context.Context, installationID int64, owner, repo, base, head string) (Comparison, error) {
	c := a.installation(installationID)
	// One commit per page: only the status and the files are used, and the
	// file list does not page.
	cc, resp, err := c.Repositories.CompareCommits(ctx, owner, repo, base, head, &gh.ListOptions{PerPage: 1})
	if err != nil {
		return Comparison{}, apiError(fmt.Sprintf("compare %s/%s %s...%s", owner, repo, short(base), short(head)), resp, err)
	}
	out := Comparison{Status: cc.GetStatus(), AheadBy: cc.GetAheadBy(), BehindBy: cc.GetBehindBy()}
	for _, f := range cc.Files {
		out.Files = append(out.Files, f.GetFilename())
		if p := f.GetPreviousFilename(); p != "" {
			out.Files = append(out.Files, p)
		}
	}
	out.FilesTruncated = len(cc.Files) >= MaxCompareFiles
	switch out.Status {
	case CompareAhead, CompareBehind, CompareIdentical, CompareDiverged:
	default:
		return Comparison{}, fmt.Errorf("compare %s/%s %s...%s: unknown status %q", owner, repo, short(base), short(head), out.Status)
	}
	return out, nil
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
