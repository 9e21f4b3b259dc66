package github

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	gh "github.com/google/go-github/v50/github"
)

// Webhook headers GitHub sends with every delivery.
const (
	HeaderEvent       = "X-GitHub-Event"
	HeaderDelivery    = "X-GitHub-Delivery"
	HeaderSignature   = "X-Hub-Signature-256"
	HeaderSignature1  = "X-Hub-Signature"
	signaturePrefix   = "sha256="
	zeroSHA           = "0000000000000000000000000000000000000000"
	refHeads, refTags = "refs/heads/", "refs/tags/"
)

// Event types ParseWebhook decodes; every other type is acknowledged with
// only Type and Delivery set.
const (
	EventPing                     = "ping"
	EventPush                     = "push"
	EventInstallation             = "installation"
	EventInstallationRepositories = "installation_repositories"
)

// MaxWebhookBytes is GitHub's own cap on a delivery's payload (25 MB).
const MaxWebhookBytes = 25 << 20

var (
	// ErrSignature: the delivery is not signed with the webhook secret
	// (missing, malformed or wrong X-Hub-Signature-256). Answer 401.
	ErrSignature = errors.New("bad webhook signature")
	// ErrPayload: the delivery is signed but cannot be understood. Answer
	// 400. Bodies over the limit are ErrTooLarge instead (answer 413).
	ErrPayload = errors.New("malformed webhook payload")
)

// Event is one verified webhook delivery.
type Event struct {
	// Delivery is the X-GitHub-Delivery GUID; redeliveries repeat it, so it
	// is the key to deduplicate on.
	Delivery string
	// Type is the X-GitHub-Event header.
	Type string
	// Action is the payload's "action" for installation and pull_request
	// events.
	Action string
	// Ping is set for "ping", sent when the hook is created.
	Ping bool
	// Push is set for "push".
	Push *Push
	// Installation is set for "installation" and
	// "installation_repositories".
	Installation *InstallationEvent
	// PullRequest is set for "pull_request".
	PullRequest *PullRequest
}

// Push is a push webhook, reduced to what deploying needs.
type Push struct {
	InstallationID int64
	RepoID         int64
	Owner          string
	Repo           string
	FullName       string
	// Ref is the full ref pushed: refs/heads/main, refs/tags/v1.
	Ref           string
	DefaultBranch string
	// Before and After are the ref's SHAs; Before is all zeros when the
	// ref was created, After when it was deleted.
	Before, After string
	Deleted       bool
	Created       bool
	Forced        bool
	// HeadCommit is the commit After points to; zero when Deleted.
	HeadCommit CommitInfo
	// Pusher is the pusher's name, Sender the login of the account that
	// triggered the event.
	Pusher, Sender string
	Compare        string
	// Changed are the paths the push's commits added, removed or
	// modified, sorted; Commits is how many commits the payload lists
	// (GitHub lists at most MaxPushCommits, so a list that long may be
	// cut).
	Changed []string
	Commits int
}

// MaxPushCommits is the most commits GitHub lists in a push webhook.
const MaxPushCommits = 2048

// ChangesKnown reports whether Changed is every path the push changed:
// not for a forced push (its commits are the new ones only, not what left
// the branch), nor for a list GitHub may have cut.
func (p *Push) ChangesKnown() bool {
	return !p.Forced && !p.Created && p.Commits < MaxPushCommits
}

// IsDefaultBranch reports whether the push updated the repository's default
// branch, whatever its name.
func (p *Push) IsDefaultBranch() bool {
	return p.DefaultBranch != "" && p.Ref == refHeads+p.DefaultBranch
}

// IsTag reports whether the push was to a tag.
func (p *Push) IsTag() bool { return strings.HasPrefix(p.Ref, refTags) }

// Branch returns the branch name for a branch push, else "".
func (p *Push) Branch() string {
	if b, ok := strings.CutPrefix(p.Ref, refHeads); ok {
		return b
	}
	return ""
}

// InstallationEvent is an "installation" or "installation_repositories"
// webhook. Action is created, deleted, suspend, unsuspend or
// new_permissions_accepted for the first, added or removed for the second.
// For uniform handling, the repositories of a created installation are in
// Added and those of a deleted one in Removed.
type InstallationEvent struct {
	Action       string
	Installation Installation
	Added        []Repo
	Removed      []Repo
	// Sender is the login of the user who acted.
	Sender string
}

// ParseWebhook verifies and decodes one delivery. The body must carry a
// valid X-Hub-Signature-256 HMAC of the secret (compared in constant time);
// the SHA-1 X-Hub-Signature alone is refused. Bodies over maxBytes (<= 0:
// MaxWebhookBytes) fail with ErrTooLarge. Errors: ErrSignature (401), ErrPayload (400), ErrTooLarge
// (413). An empty secret is refused too: an unsigned hook would let anyone
// trigger deployments.
func ParseWebhook(r *http.Request, secret []byte, maxBytes int64) (Event, error) {
	if len(secret) == 0 {
		return Event{}, fmt.Errorf("webhook: no secret configured: %w", ErrSignature)
	}
	sig := r.Header.Get(HeaderSignature)
	if sig == "" {
		return Event{}, fmt.Errorf("webhook: missing %s: %w", HeaderSignature, ErrSignature)
	}
	if !strings.HasPrefix(sig, signaturePrefix) {
		return Event{}, fmt.Errorf("webhook: %s is not sha256: %w", HeaderSignature, ErrSignature)
	}
	if maxBytes <= 0 {
		maxBytes = MaxWebhookBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return Event{}, fmt.Errorf("webhook body over %d bytes: %w", maxBytes, ErrTooLarge)
		}
		return Event{}, fmt.Errorf("webhook: read body: %w", err)
	}
	if err := gh.ValidateSignature(sig, body, secret); err != nil {
		return Event{}, fmt.Errorf("webhook: %w: %w", ErrSignature, err)
	}
	ev := Event{Delivery: r.Header.Get(HeaderDelivery), Type: r.Header.Get(HeaderEvent)}
	if ev.Type == "" {
		return Event{}, fmt.Errorf("webhook: missing %s: %w", HeaderEvent, ErrPayload)
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return Event{}, fmt.Errorf("webhook: content type: %w: %w", ErrPayload, err)
	}
	// The signature is already checked above, over the raw body; this call
	// only extracts the JSON (from the "payload" field of a form body).
	payload, err := gh.ValidatePayloadFromBody(ct, bytes.NewReader(body), "", nil)
	if err != nil {
		return Event{}, fmt.Errorf("webhook: %w: %w", ErrPayload, err)
	}
	switch ev.Type {
	case EventPing, EventPush, EventInstallation, EventInstallationRepositories, EventPullRequest:
	default:
		return ev, nil
	}
	parsed, err := gh.ParseWebHook(ev.Type, payload)
	if err != nil {
		return Event{}, fmt.Errorf("webhook %s: %w: %w", ev.Type, ErrPayload, err)
	}
	switch e := parsed.(type) {
	case *gh.PingEvent:
		ev.Ping = true
	case *gh.PushEvent:
		p, err := pushFrom(e)
		if err != nil {
			return Event{}, fmt.Errorf("webhook push: %w: %w", ErrPayload, err)
		}
		ev.Push = p
	case *gh.PullRequestEvent:
		p, err := pullRequestFrom(e)
		if err != nil {
			return Event{}, fmt.Errorf("webhook pull_request: %w: %w", ErrPayload, err)
		}
		ev.Action, ev.PullRequest = p.Action, p
	case *gh.InstallationEvent:
		ev.Action = e.GetAction()
		ie := &InstallationEvent{Action: ev.Action, Sender: e.GetSender().GetLogin()}
		if e.Installation == nil || e.Installation.GetID() == 0 {
			return Event{}, fmt.Errorf("webhook installation: no installation id: %w", ErrPayload)
		}
		ie.Installation = installationFrom(e.Installation)
		switch ev.Action {
		case "created":
			ie.Added = reposFrom(e.Repositories)
		case "deleted":
			ie.Removed = reposFrom(e.Repositories)
		}
		ev.Installation = ie
	case *gh.InstallationRepositoriesEvent:
		ev.Action = e.GetAction()
		if e.Installation == nil || e.Installation.GetID() == 0 {
			return Event{}, fmt.Errorf("webhook installation_repositories: no installation id: %w", ErrPayload)
		}
		ev.Installation = &InstallationEvent{
			Action:       ev.Action,
			Installation: installationFrom(e.Installation),
			Added:        reposFrom(e.RepositoriesAdded),
			Removed:      reposFrom(e.RepositoriesRemoved),
			Sender:       e.GetSender().GetLogin(),
		}
	}
	return ev, nil
}

func pushFrom(e *gh.PushEvent) (*Push, error) {
	repo := e.GetRepo()
	p := &Push{
		InstallationID: e.GetInstallation().GetID(),
		RepoID:         repo.GetID(),
		Owner:          repo.GetOwner().GetLogin(),
		Repo:           repo.GetName(),
		FullName:       repo.GetFullName(),
		Ref:            e.GetRef(),
		DefaultBranch:  repo.GetDefaultBranch(),
		Before:         e.GetBefore(),
		After:          e.GetAfter(),
		Deleted:        e.GetDeleted(),
		Created:        e.GetCreated(),
		Forced:         e.GetForced(),
		Pusher:         e.GetPusher().GetName(),
		Sender:         e.GetSender().GetLogin(),
		Compare:        e.GetCompare(),
	}
	// In push payloads the owner object carries "name" and "login"; older
	// payloads only "name".
	if p.Owner == "" {
		p.Owner = repo.GetOwner().GetName()
	}
	if p.FullName == "" && p.Owner != "" {
		p.FullName = p.Owner + "/" + p.Repo
	}
	if p.Owner == "" || p.Repo == "" || p.Ref == "" {
		return nil, errors.New("repository or ref missing")
	}
	if !p.Deleted && !isSHA(p.After) {
		return nil, fmt.Errorf("after %q is not a commit sha", p.After)
	}
	changed := map[string]bool{}
	for _, c := range e.Commits {
		for _, l := range [][]string{c.Added, c.Removed, c.Modified} {
			for _, f := range l {
				changed[f] = true
			}
		}
	}
	p.Commits = len(e.Commits)
	for f := range changed {
		p.Changed = append(p.Changed, f)
	}
	slices.Sort(p.Changed)
	if hc := e.GetHeadCommit(); hc != nil {
		p.HeadCommit = CommitInfo{
			SHA:         hc.GetID(),
			Message:     hc.GetMessage(),
			Author:      hc.GetAuthor().GetName(),
			AuthorLogin: hc.GetAuthor().GetLogin(),
			Time:        hc.GetTimestamp().Time,
			URL:         hc.GetURL(),
		}
	}
	return p, nil
}

// isSHA reports whether s is a 40-digit lowercase hex SHA-1.
func isSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
