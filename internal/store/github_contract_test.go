package store

import (
	"context"
	"sync"
	"testing"
	"time"
)

// testGitHub covers the GitHub App's tables: jobs, installations and
// repositories, sessions, user tokens and deployments' commit time.
func testGitHub(t *testing.T, s *Store) {
	t.Run("Jobs", func(t *testing.T) { testGitHubJobs(t, s) })
	t.Run("Installations", func(t *testing.T) { testGitHubInstallations(t, s) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, s) })
	t.Run("CommitTime", func(t *testing.T) { testCommitTime(t, s) })
	t.Run("Previews", func(t *testing.T) { testGitHubPreviews(t, s) })
}

func testGitHubPreviews(t *testing.T, s *Store) {
	ctx := context.Background()
	_, err := s.GitHubPreview(ctx, "o/r", 1)
	wantErr(t, "GitHubPreview(o/r#1)", err, ErrNotFound)
	p := GitHubPreview{Repo: "O/r", Number: 1, Component: "web--pr-1", Head: "abc", CommentID: 9, GitHubDeployment: 7}
	must(t, s.PutGitHubPreview(ctx, p))
	must(t, s.PutGitHubPreview(ctx, GitHubPreview{Repo: "o/r", Number: 2, Head: "def"}))
	got, err := s.GitHubPreview(ctx, "o/R", 1)
	must(t, err)
	if got.Repo != "O/r" || got.Component != "web--pr-1" || got.Head != "abc" || got.CommentID != 9 || got.GitHubDeployment != 7 || got.Closed || got.UpdatedAt.IsZero() {
		t.Errorf("GitHubPreview = %+v", got)
	}
	p.ApprovedBy, p.Closed, p.Head = "octocat", true, "ghi"
	must(t, s.PutGitHubPreview(ctx, p))
	got, err = s.GitHubPreview(ctx, "o/r", 1)
	must(t, err)
	if got.ApprovedBy != "octocat" || !got.Closed || got.Head != "ghi" || got.CommentID != 9 {
		t.Errorf("GitHubPreview after update = %+v", got)
	}
	if other, err := s.GitHubPreview(ctx, "o/r", 2); err != nil || other.Head != "def" {
		t.Errorf("other preview = %+v, %v", other, err)
	}
	// Component previews of a repository that lists several components.
	must(t, s.PutGitHubPreviewComponent(ctx, GitHubPreviewComponent{Repo: "O/r", Number: 1, Component: "web", Dir: "web", Preview: "web--pr-1", Head: "abc", GitHubDeployment: 3, Line: "live"}))
	must(t, s.PutGitHubPreviewComponent(ctx, GitHubPreviewComponent{Repo: "o/r", Number: 1, Component: "api", Dir: "services/api", Preview: "api--pr-1", Head: "abc"}))
	must(t, s.PutGitHubPreviewComponent(ctx, GitHubPreviewComponent{Repo: "o/r", Number: 1, Component: "web", Dir: "web", Preview: "web--pr-1", Head: "def", GitHubDeployment: 4, Line: "deploying"}))
	cs, err := s.GitHubPreviewComponents(ctx, "o/R", 1)
	must(t, err)
	if len(cs) != 2 || cs[0].Component != "api" || cs[0].Dir != "services/api" || cs[1].Head != "def" || cs[1].GitHubDeployment != 4 || cs[1].Line != "deploying" || cs[1].Preview != "web--pr-1" {
		t.Errorf("GitHubPreviewComponents = %+v", cs)
	}
	if cs, err := s.GitHubPreviewComponents(ctx, "o/r", 2); err != nil || len(cs) != 0 {
		t.Errorf("GitHubPreviewComponents of another pull request = %+v, %v", cs, err)
	}
}

func testGitHubJobs(t *testing.T, s *Store) {
	ctx := context.Background()
	_, err := s.GitHubJob(ctx, "nope")
	wantErr(t, "GitHubJob(nope)", err, ErrNotFound)
	j, err := s.CreateGitHubJob(ctx, GitHubJob{Delivery: "d1", Kind: "push", Repo: "o/r", Payload: []byte(`{"a":1}`)})
	must(t, err)
	if j.State != JobQueued || j.CreatedAt.IsZero() {
		t.Fatalf("created job = %+v", j)
	}
	_, err = s.CreateGitHubJob(ctx, GitHubJob{Delivery: "d1", Kind: "push"})
	wantErr(t, "CreateGitHubJob twice", err, ErrConflict)
	_, err = s.CreateGitHubJob(ctx, GitHubJob{Delivery: "d2", Kind: "installation", State: JobDone, Note: "ok"})
	must(t, err)

	got, err := s.GitHubJob(ctx, "d1")
	must(t, err)
	if got.Kind != "push" || got.Repo != "o/r" || string(got.Payload) != `{"a":1}` || got.State != JobQueued {
		t.Errorf("GitHubJob(d1) = %+v", got)
	}
	open, err := s.GitHubJobs(ctx, JobQueued, JobRunning)
	must(t, err)
	if len(open) != 1 || open[0].Delivery != "d1" {
		t.Errorf("open jobs = %+v", open)
	}
	all, err := s.GitHubJobs(ctx)
	must(t, err)
	if len(all) != 2 {
		t.Errorf("all jobs = %d, want 2", len(all))
	}

	// Exactly one of many concurrent claims wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.ClaimGitHubJob(ctx, "d1", JobQueued)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d claims won, want 1", wins)
	}
	got, _ = s.GitHubJob(ctx, "d1")
	if got.State != JobRunning {
		t.Errorf("claimed job state = %q", got.State)
	}
	got.State, got.Note, got.Deployment, got.GitHubDeployment = JobFailed, "bad velo.toml", 7, 99
	must(t, s.UpdateGitHubJob(ctx, got))
	got, _ = s.GitHubJob(ctx, "d1")
	if got.State != JobFailed || got.Note != "bad velo.toml" || got.Deployment != 7 || got.GitHubDeployment != 99 {
		t.Errorf("updated job = %+v", got)
	}
	wantErr(t, "UpdateGitHubJob(nope)", s.UpdateGitHubJob(ctx, GitHubJob{Delivery: "nope"}), ErrNotFound)
}

func testGitHubInstallations(t *testing.T, s *Store) {
	ctx := context.Background()
	wantErr(t, "PutGitHubRepo without installation",
		s.PutGitHubRepo(ctx, GitHubRepo{ID: 1, FullName: "o/r", Installation: 5}), ErrNotFound)
	must(t, s.PutGitHubInstallation(ctx, GitHubInstallation{ID: 5, Account: "o", AccountType: "User"}))
	must(t, s.PutGitHubInstallation(ctx, GitHubInstallation{ID: 5, Account: "O2", AccountType: "Organization"}))
	ins, err := s.GitHubInstallations(ctx)
	must(t, err)
	if len(ins) != 1 || ins[0].Account != "O2" || ins[0].AccountType != "Organization" {
		t.Fatalf("installations = %+v", ins)
	}
	must(t, s.PutGitHubRepo(ctx, GitHubRepo{ID: 1, FullName: "Octo/Hello", Installation: 5}))
	r, err := s.GitHubRepo(ctx, "octo/hello")
	must(t, err)
	if r.ID != 1 || r.FullName != "Octo/Hello" || r.Installation != 5 {
		t.Errorf("GitHubRepo = %+v", r)
	}
	// A rename keeps the ID.
	must(t, s.PutGitHubRepo(ctx, GitHubRepo{ID: 1, FullName: "octo/renamed", Installation: 5}))
	_, err = s.GitHubRepo(ctx, "octo/hello")
	wantErr(t, "GitHubRepo(old name)", err, ErrNotFound)
	must(t, s.DeleteGitHubRepo(ctx, 1))
	_, err = s.GitHubRepo(ctx, "octo/renamed")
	wantErr(t, "GitHubRepo after delete", err, ErrNotFound)
	must(t, s.DeleteGitHubRepo(ctx, 1))

	must(t, s.PutGitHubRepo(ctx, GitHubRepo{ID: 2, FullName: "o/two", Installation: 5}))
	must(t, s.DeleteGitHubInstallation(ctx, 5))
	_, err = s.GitHubRepo(ctx, "o/two")
	wantErr(t, "repo of deleted installation", err, ErrNotFound)
	wantErr(t, "DeleteGitHubInstallation twice", s.DeleteGitHubInstallation(ctx, 5), ErrNotFound)

	_, err = s.GitHubUserToken(ctx, "mona")
	wantErr(t, "GitHubUserToken(mona)", err, ErrNotFound)
	must(t, s.PutGitHubUserToken(ctx, "Mona", "ghu_1"))
	must(t, s.PutGitHubUserToken(ctx, "mona", "ghu_2"))
	if tok, err := s.GitHubUserToken(ctx, "MONA"); err != nil || tok != "ghu_2" {
		t.Errorf("GitHubUserToken = %q, %v", tok, err)
	}
}

func testSessions(t *testing.T, s *Store) {
	ctx := context.Background()
	must(t, s.CreateSession(ctx, Session{Hash: "h1", User: "admin", ExpiresAt: time.Now().Add(time.Hour)}))
	wantErr(t, "CreateSession twice", s.CreateSession(ctx, Session{Hash: "h1", User: "x", ExpiresAt: time.Now().Add(time.Hour)}), ErrConflict)
	must(t, s.CreateSession(ctx, Session{Hash: "old", User: "github:mona", ExpiresAt: time.Now().Add(-time.Second)}))
	se, err := s.Session(ctx, "h1")
	must(t, err)
	if se.User != "admin" || se.ExpiresAt.Before(time.Now()) || se.CreatedAt.IsZero() {
		t.Errorf("Session(h1) = %+v", se)
	}
	_, err = s.Session(ctx, "old")
	wantErr(t, "expired session", err, ErrNotFound)
	n, err := s.DeleteExpiredSessions(ctx)
	must(t, err)
	if n != 1 {
		t.Errorf("DeleteExpiredSessions = %d, want 1", n)
	}
	must(t, s.DeleteSession(ctx, "h1"))
	_, err = s.Session(ctx, "h1")
	wantErr(t, "deleted session", err, ErrNotFound)
	must(t, s.DeleteSession(ctx, "h1"))
}

func testCommitTime(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "web")
	when := time.Date(2024, 5, 16, 12, 0, 1, 0, time.UTC)
	d, err := s.CreateDeployment(ctx, Deployment{Component: "web", Digest: "d", Runtime: "wasm", Source: "github", CommitTime: when})
	must(t, err)
	got, err := s.Deployment(ctx, d.ID)
	must(t, err)
	if !got.CommitTime.Equal(when) {
		t.Errorf("CommitTime = %v, want %v", got.CommitTime, when)
	}
	up := mkDeployment(t, s, "web", "e", "wasm")
	if got, _ := s.Deployment(ctx, up.ID); !got.CommitTime.IsZero() {
		t.Errorf("upload CommitTime = %v, want zero", got.CommitTime)
	}
	later := when.Add(time.Minute)
	must(t, s.SetDeploymentCommitTime(ctx, up.ID, later))
	if ds, _ := s.Deployments(ctx, "web", 1); len(ds) != 1 || !ds[0].CommitTime.Equal(later) {
		t.Errorf("Deployments()[0].CommitTime = %+v", ds)
	}
	wantErr(t, "SetDeploymentCommitTime(nope)", s.SetDeploymentCommitTime(ctx, 1<<40, later), ErrNotFound)
}
