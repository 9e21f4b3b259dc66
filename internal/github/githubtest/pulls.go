package githubtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PullRequest is a pull request on the stand-in. Its head commits live in
// the base repository (as GitHub keeps refs/pull/N/head there, also for
// forks), so the base repository's token fetches their tarballs.
type PullRequest struct {
	Number int
	Base   *Repo
	// HeadOwner owns the head repository: the base's owner, or a fork's.
	HeadOwner  string
	HeadBranch string
	Title      string
	Author     string

	id     int64
	forkID int64
	state  string // open | closed
	merged bool
	labels []string
	before string // head before the last Commit
}

// Comment is an issue or pull request comment on the stand-in.
type Comment struct {
	ID     int64
	Number int
	Body   string
	User   string
	// Edits counts the PATCHes of the comment.
	Edits     int
	CreatedAt time.Time
	UpdatedAt time.Time
}

// OpenPullRequest opens pull request number N of base from branch head of
// base (fork "" or base's owner) or of a fork owned by fork. The head
// starts at the base's default branch head; commit to it with Commit.
func (s *Server) OpenPullRequest(base *Repo, fork, head, title string) *PullRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prCounter++
	owner := base.Owner
	if fork != "" {
		owner = fork
	}
	pr := &PullRequest{
		Number: s.prCounter, Base: base, HeadOwner: owner, HeadBranch: head, Title: title, Author: owner,
		id: s.newIDLocked(), forkID: s.newIDLocked(), state: "open",
	}
	if _, ok := base.branches[pr.headRef()]; !ok {
		base.branches[pr.headRef()] = base.branches[base.DefaultBranch]
	}
	s.pulls[base.ID] = append(s.pulls[base.ID], pr)
	return pr
}

// Fork reports whether the head lives in another repository.
func (pr *PullRequest) Fork() bool { return !strings.EqualFold(pr.HeadOwner, pr.Base.Owner) }

// headRef is the branch of the base repository holding the head.
func (pr *PullRequest) headRef() string {
	if pr.Fork() {
		return fmt.Sprintf("refs/pull/%d/head", pr.Number)
	}
	return pr.HeadBranch
}

// Commit commits files (the whole tree) to the pull request's head and
// returns the SHA.
func (pr *PullRequest) Commit(files map[string]string, message string) string {
	pr.before = pr.Head()
	return pr.Base.CommitTo(pr.headRef(), files, message)
}

// Head returns the pull request's head SHA.
func (pr *PullRequest) Head() string { return pr.Base.Head(pr.headRef()) }

// AddLabel and RemoveLabel change the pull request's labels (what a
// labeled or unlabeled event then carries).
func (pr *PullRequest) AddLabel(name string) {
	pr.Base.s.mu.Lock()
	defer pr.Base.s.mu.Unlock()
	if !slices.Contains(pr.labels, name) {
		pr.labels = append(pr.labels, name)
	}
}

// RemoveLabel removes a label.
func (pr *PullRequest) RemoveLabel(name string) {
	pr.Base.s.mu.Lock()
	defer pr.Base.s.mu.Unlock()
	pr.labels = slices.DeleteFunc(pr.labels, func(l string) bool { return l == name })
}

// Close closes the pull request, merged or not.
func (pr *PullRequest) Close(merged bool) {
	pr.Base.s.mu.Lock()
	defer pr.Base.s.mu.Unlock()
	pr.state, pr.merged = "closed", merged
}

// Reopen reopens it.
func (pr *PullRequest) Reopen() {
	pr.Base.s.mu.Lock()
	defer pr.Base.s.mu.Unlock()
	pr.state, pr.merged = "open", false
}

// SetPermission gives login a permission on the repository: "admin",
// "maintain", "write", "triage", "read" or "none" (the default).
func (r *Repo) SetPermission(login, permission string) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.perms == nil {
		r.perms = map[string]string{}
	}
	r.perms[strings.ToLower(login)] = permission
}

// Comments returns the comments on issue or pull request number of
// owner/repo, oldest first.
func (s *Server) Comments(owner, repo string, number int) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[strings.ToLower(owner+"/"+repo)]
	if r == nil {
		return nil
	}
	var out []Comment
	for _, c := range s.comments[r.ID] {
		if c.Number == number {
			out = append(out, *c)
		}
	}
	return out
}

// PullRequestEvent delivers a pull_request webhook of action (opened,
// synchronize, reopened, closed, labeled, unlabeled…) sent by sender
// ("" : the author); label names the label of labeled and unlabeled.
func (s *Server) PullRequestEvent(ctx context.Context, target string, pr *PullRequest, action, sender, label string) (*http.Response, error) {
	return s.Deliver(ctx, target, "pull_request", s.PullRequestPayload(pr, action, sender, label))
}

// PullRequestPayload returns the payload PullRequestEvent sends, shaped
// like GitHub's documented pull_request payloads (octokit/webhooks'
// payload-examples).
func (s *Server) PullRequestPayload(pr *PullRequest, action, sender, label string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	base := pr.Base
	if sender == "" {
		sender = pr.Author
	}
	user := func(login string) map[string]any {
		return map[string]any{"login": login, "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==", "type": "User", "site_admin": false,
			"url": s.URL() + "users/" + login, "html_url": s.WebURL() + "/" + login}
	}
	headRepo := s.repoJSONLocked(base)
	if pr.Fork() {
		headRepo = s.repoJSONLocked(base)
		headRepo["id"], headRepo["node_id"] = pr.forkID, "R_"+strconv.FormatInt(pr.forkID, 10)
		headRepo["full_name"] = pr.HeadOwner + "/" + base.Name
		headRepo["owner"] = user(pr.HeadOwner)
		headRepo["fork"] = true
		headRepo["html_url"] = s.WebURL() + "/" + pr.HeadOwner + "/" + base.Name
		headRepo["url"] = s.URL() + "repos/" + pr.HeadOwner + "/" + base.Name
	}
	labels := []map[string]any{}
	labelJSON := func(name string) map[string]any {
		return map[string]any{"id": 1362934389, "node_id": "LA_" + name, "url": s.URL() + "repos/" + base.FullName() + "/labels/" + name,
			"name": name, "color": "d73a4a", "default": false, "description": ""}
	}
	for _, l := range pr.labels {
		labels = append(labels, labelJSON(l))
	}
	head := base.branches[pr.headRef()]
	now := time.Now().UTC().Format(time.RFC3339)
	var closedAt, mergedAt any
	if pr.state == "closed" {
		closedAt = now
		if pr.merged {
			mergedAt = now
		}
	}
	u := s.URL() + "repos/" + base.FullName() + "/pulls/" + strconv.Itoa(pr.Number)
	p := map[string]any{
		"action": action,
		"number": pr.Number,
		"pull_request": map[string]any{
			"url": u, "id": pr.id, "node_id": "PR_" + strconv.FormatInt(pr.id, 10),
			"html_url":  s.WebURL() + "/" + base.FullName() + "/pull/" + strconv.Itoa(pr.Number),
			"diff_url":  s.WebURL() + "/" + base.FullName() + "/pull/" + strconv.Itoa(pr.Number) + ".diff",
			"issue_url": s.URL() + "repos/" + base.FullName() + "/issues/" + strconv.Itoa(pr.Number),
			"number":    pr.Number, "state": pr.state, "locked": false, "title": pr.Title,
			"user": user(pr.Author), "body": nil,
			"created_at": now, "updated_at": now, "closed_at": closedAt, "merged_at": mergedAt,
			"merge_commit_sha": nil, "assignee": nil, "assignees": []any{}, "requested_reviewers": []any{},
			"requested_teams": []any{}, "labels": labels, "milestone": nil, "draft": false,
			"commits_url": u + "/commits", "review_comments_url": u + "/comments",
			"comments_url": s.URL() + "repos/" + base.FullName() + "/issues/" + strconv.Itoa(pr.Number) + "/comments",
			"statuses_url": s.URL() + "repos/" + base.FullName() + "/statuses/" + head,
			"head": map[string]any{
				"label": pr.HeadOwner + ":" + pr.HeadBranch, "ref": pr.HeadBranch, "sha": head,
				"user": user(pr.HeadOwner), "repo": headRepo,
			},
			"base": map[string]any{
				"label": base.Owner + ":" + base.DefaultBranch, "ref": base.DefaultBranch,
				"sha": base.branches[base.DefaultBranch], "user": s.ownerJSONLocked(base), "repo": s.repoJSONLocked(base),
			},
			"author_association": "CONTRIBUTOR", "auto_merge": nil, "active_lock_reason": nil,
			"merged": pr.merged, "mergeable": nil, "rebaseable": nil, "mergeable_state": "unknown",
			"merged_by": nil, "comments": 0, "review_comments": 0, "maintainer_can_modify": false,
			"commits": 1, "additions": 1, "deletions": 1, "changed_files": 1,
		},
		"repository":   s.repoJSONLocked(base),
		"sender":       user(sender),
		"installation": map[string]any{"id": base.InstallationID, "node_id": "I_" + strconv.FormatInt(base.InstallationID, 10)},
	}
	if action == "synchronize" {
		p["before"], p["after"] = pr.before, head
	}
	if label != "" {
		p["label"] = labelJSON(label)
	}
	return p
}

func (s *Server) commentJSONLocked(r *Repo, c *Comment) map[string]any {
	u := s.URL() + "repos/" + r.FullName() + "/issues/comments/" + strconv.FormatInt(c.ID, 10)
	return map[string]any{
		"id": c.ID, "node_id": "IC_" + strconv.FormatInt(c.ID, 10), "url": u,
		"html_url":   s.WebURL() + "/" + r.FullName() + "/pull/" + strconv.Itoa(c.Number) + "#issuecomment-" + strconv.FormatInt(c.ID, 10),
		"issue_url":  s.URL() + "repos/" + r.FullName() + "/issues/" + strconv.Itoa(c.Number),
		"body":       c.Body,
		"user":       map[string]any{"login": c.User, "id": s.AppID, "type": "Bot"},
		"created_at": c.CreatedAt.Format(time.RFC3339), "updated_at": c.UpdatedAt.Format(time.RFC3339),
		"author_association":       "NONE",
		"performed_via_github_app": map[string]any{"id": s.AppID, "slug": s.AppSlug},
	}
}

// maxCommentBody is GitHub's limit on a comment's body.
const maxCommentBody = 65536

func (s *Server) readCommentBody(w http.ResponseWriter, req *http.Request) (string, bool) {
	var body struct {
		Body *string `json:"body"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return "", false
	}
	if body.Body == nil || *body.Body == "" {
		validationFailed(w, "IssueComment", "body", "body is missing")
		return "", false
	}
	if len(*body.Body) > maxCommentBody {
		validationFailed(w, "IssueComment", "body", "body is too long (maximum is 65536 characters)")
		return "", false
	}
	return *body.Body, true
}

// createComment serves POST /repos/{o}/{r}/issues/{number}/comments.
func (s *Server) createComment(w http.ResponseWriter, req *http.Request, r *Repo) {
	n, _ := strconv.Atoi(req.PathValue("number"))
	if !slices.ContainsFunc(s.pulls[r.ID], func(pr *PullRequest) bool { return pr.Number == n }) {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	body, ok := s.readCommentBody(w, req)
	if !ok {
		return
	}
	t := time.Now().UTC().Truncate(time.Second)
	c := &Comment{ID: s.newIDLocked(), Number: n, Body: body, User: s.AppSlug + "[bot]", CreatedAt: t, UpdatedAt: t}
	s.comments[r.ID] = append(s.comments[r.ID], c)
	w.Header().Set("Location", s.URL()+"repos/"+r.FullName()+"/issues/comments/"+strconv.FormatInt(c.ID, 10))
	writeJSON(w, http.StatusCreated, s.commentJSONLocked(r, c))
}

// editComment serves PATCH /repos/{o}/{r}/issues/comments/{id}.
func (s *Server) editComment(w http.ResponseWriter, req *http.Request, r *Repo) {
	id, _ := strconv.ParseInt(req.PathValue("id"), 10, 64)
	i := slices.IndexFunc(s.comments[r.ID], func(c *Comment) bool { return c.ID == id })
	if i < 0 {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	body, ok := s.readCommentBody(w, req)
	if !ok {
		return
	}
	c := s.comments[r.ID][i]
	c.Body, c.Edits, c.UpdatedAt = body, c.Edits+1, time.Now().UTC().Truncate(time.Second)
	writeJSON(w, http.StatusOK, s.commentJSONLocked(r, c))
}

// DeleteComment removes a comment, as a person may on GitHub.
func (s *Server) DeleteComment(owner, repo string, id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[strings.ToLower(owner+"/"+repo)]
	if r != nil {
		s.comments[r.ID] = slices.DeleteFunc(s.comments[r.ID], func(c *Comment) bool { return c.ID == id })
	}
}

// listComments serves GET /repos/{o}/{r}/issues/{number}/comments.
func (s *Server) listComments(w http.ResponseWriter, req *http.Request, r *Repo) {
	n, _ := strconv.Atoi(req.PathValue("number"))
	var cs []*Comment
	for _, c := range s.comments[r.ID] {
		if c.Number == n {
			cs = append(cs, c)
		}
	}
	lo, hi := paginate(w, req, s.srv.URL, len(cs))
	out := []map[string]any{}
	for _, c := range cs[lo:hi] {
		out = append(out, s.commentJSONLocked(r, c))
	}
	writeJSON(w, http.StatusOK, out)
}

// permission serves GET /repos/{o}/{r}/collaborators/{username}/permission:
// the user's permission (admin, write, read or none; maintain reads as
// write and triage as read there, the role in role_name).
func (s *Server) permission(w http.ResponseWriter, req *http.Request, r *Repo) {
	login := req.PathValue("username")
	role := r.perms[strings.ToLower(login)]
	if role == "" {
		role = "none"
	}
	perm := role
	switch role {
	case "maintain":
		perm = "write"
	case "triage":
		perm = "read"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"permission": perm, "role_name": role,
		"user": map[string]any{"login": login, "id": 583231, "type": "User", "site_admin": false},
	})
}

// maxPullFiles is the most files GitHub lists for a pull request.
const maxPullFiles = 3000

// pullFiles serves GET /repos/{o}/{r}/pulls/{number}/files as GitHub
// documents it: the files the pull request changes (from the merge base
// of its base branch and its head, to its head), paginated (30 a page by
// default, at most 100), at most 3000 in all; an unknown number is 404.
func (s *Server) pullFiles(w http.ResponseWriter, req *http.Request, r *Repo) {
	n, err := strconv.Atoi(req.PathValue("number"))
	var pr *PullRequest
	for _, p := range s.pulls[r.ID] {
		if err == nil && p.Number == n {
			pr = p
		}
	}
	if pr == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	head := r.commits[r.branches[pr.headRef()]]
	fromBase := r.ancestorsLocked(r.branches[r.DefaultBranch])
	var mergeBase *commit
	for c := head; c != nil; c = r.commits[c.parent] {
		if fromBase[c.sha] {
			mergeBase = c
			break
		}
	}
	changed := changedLocked(mergeBase, head)
	if len(changed) > maxPullFiles {
		changed = changed[:maxPullFiles]
	}
	lo, hi := paginate(w, req, s.srv.URL, len(changed))
	files := []map[string]any{}
	for _, p := range changed[lo:hi] {
		st := "modified"
		inBase := false
		if mergeBase != nil {
			_, inBase = mergeBase.files[p]
		}
		_, inHead := head.files[p]
		switch {
		case !inBase:
			st = "added"
		case !inHead:
			st = "removed"
		}
		files = append(files, map[string]any{
			"sha": head.tree, "filename": p, "status": st, "additions": 1, "deletions": 0, "changes": 1,
			"blob_url":     s.WebURL() + "/" + r.FullName() + "/blob/" + head.sha + "/" + p,
			"raw_url":      s.WebURL() + "/" + r.FullName() + "/raw/" + head.sha + "/" + p,
			"contents_url": s.URL() + "repos/" + r.FullName() + "/contents/" + p + "?ref=" + head.sha,
			"patch":        "@@ -1 +1 @@",
		})
	}
	writeJSON(w, http.StatusOK, files)
}
