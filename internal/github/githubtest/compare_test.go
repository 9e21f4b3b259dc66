package githubtest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
)

// TestCompare checks App.Compare against the stand-in's compare API:
// every status, the files of the three-dot diff, the 300-file cut, and 404
// for a commit the repository does not have.
func TestCompare(t *testing.T) {
	s, repo, a, app := setup(t)
	ctx := context.Background()
	b := repo.Commit(map[string]string{"velo.toml": "name = \"hello\"\n", "api/main.go": "package main\n"}, "B")
	c := repo.Commit(map[string]string{"velo.toml": "name = \"hello\"\n", "api/main.go": "package main // c\n", "web/index.html": "hi\n"}, "C")
	// D diverges from C: it is committed on B, then the branch goes back.
	repo.SetHead("trunk", b)
	d := repo.Commit(map[string]string{"velo.toml": "name = \"other\"\n", "api/main.go": "package main\n"}, "D")
	repo.SetHead("trunk", c)

	for _, tc := range []struct {
		base, head string
		status     string
		ahead      int
		behind     int
		files      []string
	}{
		{a, c, github.CompareAhead, 2, 0, []string{"api/main.go", "src-extra.txt", "src/lib/util.go", "src/main.go", "static/index.html", "web/index.html"}},
		{b, c, github.CompareAhead, 1, 0, []string{"api/main.go", "web/index.html"}},
		{c, a, github.CompareBehind, 0, 2, nil},
		{c, c, github.CompareIdentical, 0, 0, nil},
		{c, d, github.CompareDiverged, 1, 1, []string{"velo.toml"}},
		{"trunk", d, github.CompareDiverged, 1, 1, []string{"velo.toml"}},
	} {
		got, err := app.Compare(ctx, inst, "octo-org", "hello", tc.base, tc.head)
		if err != nil {
			t.Fatalf("Compare(%.7s, %.7s): %v", tc.base, tc.head, err)
		}
		if got.Status != tc.status || got.AheadBy != tc.ahead || got.BehindBy != tc.behind || !slices.Equal(got.Files, tc.files) || got.FilesTruncated {
			t.Errorf("Compare(%.7s, %.7s) = %+v, want %s +%d -%d %v", tc.base, tc.head, got, tc.status, tc.ahead, tc.behind, tc.files)
		}
	}
	if _, err := app.Compare(ctx, inst, "octo-org", "hello", c, "0123456789abcdef0123456789abcdef01234567"); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("Compare with an unknown commit: %v, want ErrNotFound", err)
	}

	// GitHub lists at most 300 files.
	many := map[string]string{}
	for i := range 301 {
		many[fmt.Sprintf("gen/f%03d.txt", i)] = "x"
	}
	e := repo.Commit(many, "many files")
	got, err := app.Compare(ctx, inst, "octo-org", "hello", c, e)
	if err != nil || len(got.Files) != 300 || !got.FilesTruncated {
		t.Errorf("Compare over 300 files = %d files, truncated %v, %v", len(got.Files), got.FilesTruncated, err)
	}
	_ = s
}

// TestPushPayloadForced checks the stand-in marks a push forced when the
// branch did not move forward, and lists no commits for a reset to an
// older commit, as GitHub does.
func TestPushPayloadForced(t *testing.T) {
	s, repo, a, _ := setup(t)
	b := repo.Commit(map[string]string{"x": "1"}, "B")
	p := s.PushPayload(repo, "trunk", a, b)
	if p["forced"] != false || len(p["commits"].([]any)) != 1 {
		t.Errorf("fast-forward: forced %v, %d commits", p["forced"], len(p["commits"].([]any)))
	}
	repo.SetHead("trunk", a)
	p = s.PushPayload(repo, "trunk", b, a)
	if p["forced"] != true || len(p["commits"].([]any)) != 0 {
		t.Errorf("reset: forced %v, %d commits", p["forced"], len(p["commits"].([]any)))
	}
	s.MaxPushCommits = 1
	c := repo.Commit(map[string]string{"x": "2"}, "C")
	d := repo.Commit(map[string]string{"x": "3"}, "D")
	p = s.PushPayload(repo, "trunk", a, d)
	if cs := p["commits"].([]any); len(cs) != 1 || cs[0].(map[string]any)["id"] != c {
		t.Errorf("capped commits = %v", cs)
	}
	_ = githubtest.ZeroSHA
}

// TestPullRequestFiles: the files of a pull request are those its head
// changes since it left the base branch (not what the base did since),
// listed over pages of at most 100, as GitHub's pull request files API.
func TestPullRequestFiles(t *testing.T) {
	s, repo, _, app := setup(t)
	ctx := context.Background()
	tree := map[string]string{"velo.toml": "name = \"hello\"\n", "src/main.go": "package main\n"}
	repo.Commit(tree, "base")
	pr := s.OpenPullRequest(repo, "", "many", "Many files")
	head := map[string]string{"velo.toml": "name = \"hello\"\n", "src/main.go": "package main // pr\n"}
	for i := range 249 {
		head[fmt.Sprintf("gen/f%03d.txt", i)] = "x\n"
	}
	pr.Commit(head, "many files")
	// The base moves on: its change is not the pull request's.
	repo.Commit(map[string]string{"velo.toml": "name = \"moved\"\n", "src/main.go": "package main\n"}, "base moves")

	files, truncated, err := app.PullRequestFiles(ctx, inst, repo.Owner, repo.Name, pr.Number)
	if err != nil || truncated {
		t.Fatalf("PullRequestFiles = %d files, truncated %v, %v", len(files), truncated, err)
	}
	if len(files) != 250 || !slices.Contains(files, "src/main.go") || !slices.Contains(files, "gen/f248.txt") || slices.Contains(files, "velo.toml") {
		t.Errorf("PullRequestFiles = %d files (src/main.go %v, velo.toml %v)", len(files), slices.Contains(files, "src/main.go"), slices.Contains(files, "velo.toml"))
	}
	var page []map[string]any
	if code := getJSON(t, s, s.InstallationToken(inst), fmt.Sprintf("repos/%s/pulls/%d/files", repo.FullName(), pr.Number), &page); code != 200 || len(page) != 30 ||
		page[0]["filename"] == nil || page[0]["status"] == nil {
		t.Errorf("default page: %d, %d files", code, len(page))
	}
	if _, _, err := app.PullRequestFiles(ctx, inst, repo.Owner, repo.Name, 999); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("files of an unknown pull request: %v, want ErrNotFound", err)
	}
}
