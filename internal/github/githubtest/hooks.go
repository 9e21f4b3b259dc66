package githubtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ZeroSHA is the SHA GitHub puts in before (ref created) or after (ref
// deleted).
const ZeroSHA = "0000000000000000000000000000000000000000"

// Delivery records one webhook delivery.
type Delivery struct {
	ID    string
	URL   string
	Event string
	Body  []byte
	// Status is the receiver's answer, 0 when the request failed.
	Status int
}

// Deliveries returns the webhook deliveries so far, in order; a
// redelivery is recorded again with the same ID.
func (s *Server) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.deliveries)
}

// Deliver POSTs payload, JSON encoded, to target as the App's webhook, with
// GitHub's headers: X-GitHub-Event, a fresh X-GitHub-Delivery UUID,
// X-GitHub-Hook-ID, X-GitHub-Hook-Installation-Target-{Type,ID},
// X-Hub-Signature (HMAC-SHA1) and X-Hub-Signature-256, a GitHub-Hookshot
// User-Agent. Only loopback targets are allowed. The delivery ID is in
// resp.Request.Header; the caller closes resp.Body.
func (s *Server) Deliver(ctx context.Context, target, eventType string, payload any) (*http.Response, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("githubtest: encode %s payload: %w", eventType, err)
	}
	return s.send(ctx, Delivery{ID: uuid(), URL: target, Event: eventType, Body: body})
}

// Redeliver sends a recorded delivery again, with the same delivery ID and
// body, as GitHub's "Redeliver" button does.
func (s *Server) Redeliver(ctx context.Context, deliveryID string) (*http.Response, error) {
	s.mu.Lock()
	i := slices.IndexFunc(s.deliveries, func(d Delivery) bool { return d.ID == deliveryID })
	var d Delivery
	if i >= 0 {
		d = s.deliveries[i]
	}
	s.mu.Unlock()
	if i < 0 {
		return nil, fmt.Errorf("githubtest: no delivery %s", deliveryID)
	}
	return s.send(ctx, d)
}

func (s *Server) send(ctx context.Context, d Delivery) (*http.Response, error) {
	if err := checkLoopback(d.URL); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(d.Body))
	if err != nil {
		return nil, fmt.Errorf("githubtest: deliver %s: %w", d.Event, err)
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/"+randHex(4)[:7])
	h.Set("X-GitHub-Event", d.Event)
	h.Set("X-GitHub-Delivery", d.ID)
	h.Set("X-GitHub-Hook-ID", "109948940")
	h.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	h.Set("X-GitHub-Hook-Installation-Target-ID", strconv.FormatInt(s.AppID, 10))
	h.Set("X-Hub-Signature", "sha1="+hexMAC(sha1.New, s.WebhookSecret, d.Body))
	h.Set("X-Hub-Signature-256", "sha256="+hexMAC(sha256.New, s.WebhookSecret, d.Body))
	// GitHub does not follow redirects from webhook receivers.
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Do(req)
	if err == nil {
		d.Status = resp.StatusCode
	}
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("githubtest: deliver %s: %w", d.Event, err)
	}
	return resp, nil
}

func hexMAC(h func() hash.Hash, key, body []byte) string {
	m := hmac.New(h, key)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// checkLoopback refuses any target but 127.0.0.0/8, ::1 and localhost: the
// stand-in never talks to the outside world.
func checkLoopback(target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return fmt.Errorf("githubtest: target %q: %w", target, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s", errNotLoopback, target)
}

// Push delivers a push webhook for repo, shaped like GitHub's (the same
// fields as internal/github/testdata/push.json). ref is a full ref
// ("refs/heads/main") or a branch name. before and after may be ZeroSHA
// (ref created, ref deleted); after defaults to the ref's head, before to
// after's parent. target is Velo's webhook URL.
func (s *Server) Push(ctx context.Context, target string, repo *Repo, ref, before, after string) (*http.Response, error) {
	return s.Deliver(ctx, target, "push", s.PushPayload(repo, ref, before, after))
}

// PushPayload returns the payload Push sends.
func (s *Server) PushPayload(repo *Repo, ref, before, after string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	if after == "" {
		after = repo.branches[strings.TrimPrefix(ref, "refs/heads/")]
	}
	if before == "" {
		before = ZeroSHA
		if c := repo.commits[after]; c != nil && c.parent != "" {
			before = c.parent
		}
	}
	deleted := after == ZeroSHA
	var head any
	commits := []any{}
	if !deleted {
		// The commits of compare before...after (reachable from after,
		// not from before), oldest first, at most MaxPushCommits: none
		// for a force-push back to an older commit.
		chain := repo.chainLocked(before, after)
		limit := s.MaxPushCommits
		if limit <= 0 {
			limit = DefaultMaxPushCommits
		}
		chain = chain[:min(len(chain), limit)]
		for _, c := range chain {
			commits = append(commits, s.pushCommitLocked(repo, c))
		}
		if c := repo.commits[after]; c != nil {
			head = s.pushCommitLocked(repo, c)
		} else {
			head = s.pushCommitLocked(repo, &commit{sha: after, time: time.Now().UTC().Truncate(time.Second)})
		}
	}
	// GitHub marks a push forced when the ref did not move forward: its
	// old head is not an ancestor of the new one.
	forced := !deleted && before != ZeroSHA && !repo.ancestorsLocked(after)[before]
	in := s.installations[repo.InstallationID]
	owner := s.ownerJSONLocked(repo)
	owner["name"] = repo.Owner
	owner["email"] = nil
	sender := s.webUser
	if sender == "" {
		sender = repo.Owner
	}
	r := s.repoJSONLocked(repo)
	// Push payloads carry the repository with Unix timestamps and a few
	// fields the REST API does not have.
	r["owner"] = owner
	r["url"] = s.WebURL() + "/" + repo.FullName()
	r["created_at"] = repo.created.Unix()
	r["pushed_at"] = time.Now().Unix()
	for k, v := range map[string]any{
		"git_url": "git://127.0.0.1/" + repo.FullName() + ".git", "ssh_url": "git@127.0.0.1:" + repo.FullName() + ".git",
		"svn_url": s.WebURL() + "/" + repo.FullName(), "homepage": nil, "size": 1, "stargazers_count": 0,
		"watchers_count": 0, "language": nil, "has_issues": true, "has_projects": true, "has_downloads": true,
		"has_wiki": true, "has_pages": false, "forks_count": 0, "mirror_url": nil, "open_issues_count": 0,
		"license": nil, "allow_forking": true, "is_template": false, "web_commit_signoff_required": false,
		"topics": []string{}, "forks": 0, "open_issues": 0, "watchers": 0, "stargazers": 0,
		"master_branch": repo.DefaultBranch,
	} {
		r[k] = v
	}
	p := map[string]any{
		"ref": ref, "before": before, "after": after, "repository": r,
		"pusher":       map[string]any{"name": sender, "email": sender + "@users.noreply.github.com"},
		"sender":       map[string]any{"login": sender, "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==", "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4", "gravatar_id": "", "url": s.URL() + "users/" + sender, "html_url": s.WebURL() + "/" + sender, "type": "User", "site_admin": false},
		"installation": map[string]any{"id": repo.InstallationID, "node_id": "I_" + strconv.FormatInt(repo.InstallationID, 10)},
		"created":      before == ZeroSHA, "deleted": deleted, "forced": forced, "base_ref": nil,
		"compare": fmt.Sprintf("%s/%s/compare/%.12s...%.12s", s.WebURL(), repo.FullName(), before, after),
		"commits": commits, "head_commit": head,
	}
	if in != nil && in.accountType == "Organization" {
		r["organization"] = repo.Owner
		p["organization"] = map[string]any{"login": repo.Owner, "id": in.accountID, "node_id": "O_" + strconv.FormatInt(in.accountID, 10), "url": s.URL() + "orgs/" + repo.Owner, "avatar_url": "https://avatars.githubusercontent.com/u/" + strconv.FormatInt(in.accountID, 10) + "?v=4", "description": ""}
	}
	return p
}

// pushCommitLocked is a commit as push payloads list it.
func (s *Server) pushCommitLocked(repo *Repo, c *commit) map[string]any {
	var added, removed, modified []string
	parent := repo.commits[c.parent]
	for p, content := range c.files {
		old, ok := "", false
		if parent != nil {
			old, ok = parent.files[p]
		}
		switch {
		case !ok:
			added = append(added, p)
		case old != content:
			modified = append(modified, p)
		}
	}
	if parent != nil {
		for p := range parent.files {
			if _, ok := c.files[p]; !ok {
				removed = append(removed, p)
			}
		}
	}
	for _, l := range [][]string{added, removed, modified} {
		slices.Sort(l)
	}
	nonNil := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		return l
	}
	return map[string]any{
		"id": c.sha, "tree_id": c.tree, "distinct": true, "message": c.message,
		"timestamp": c.time.Format(time.RFC3339),
		"url":       s.WebURL() + "/" + repo.FullName() + "/commit/" + c.sha,
		"author":    map[string]any{"name": "Mona Lisa", "email": "mona@example.com", "username": "octocat"},
		"committer": map[string]any{"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
		"added":     nonNil(added), "removed": nonNil(removed), "modified": nonNil(modified),
	}
}
