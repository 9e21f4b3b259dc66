package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
)

// webhookReply is the JSON body of a webhook answer; GitHub shows it in
// the delivery's log.
type webhookReply struct {
	Status string `json:"status"` // queued | ignored | duplicate | pong
	Reason string `json:"reason,omitempty"`
}

// Handler serves POST /webhooks/github. It verifies the signature (401 and
// nothing stored when it is missing or wrong), records the delivery as a
// job and answers at once (202); the job runs in the background.
// Redeliveries of a delivery already recorded are acknowledged and
// dropped.
func (g *GitHub) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "webhooks are POSTed"})
			return
		}
		ev, err := github.ParseWebhook(r, g.secret, 0)
		if err != nil {
			status := http.StatusBadRequest
			switch {
			case errors.Is(err, github.ErrSignature):
				status = http.StatusUnauthorized
			case errors.Is(err, github.ErrTooLarge):
				status = http.StatusRequestEntityTooLarge
			}
			g.log.Warn("webhook refused", "status", status, "err", err)
			writeJSON(w, status, map[string]string{"error": err.Error()})
			return
		}
		status, reply, err := g.accept(r.Context(), ev)
		if err != nil {
			g.log.Error("webhook not recorded", "delivery", ev.Delivery, "event", ev.Type, "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "could not record the delivery; redeliver it"})
			return
		}
		writeJSON(w, status, reply)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// accept records a verified delivery and wakes the job runner.
func (g *GitHub) accept(ctx context.Context, ev github.Event) (int, webhookReply, error) {
	if ev.Ping {
		return http.StatusOK, webhookReply{Status: "pong"}, nil
	}
	if ev.Delivery == "" {
		return http.StatusBadRequest, webhookReply{Status: "ignored", Reason: "no " + github.HeaderDelivery + " header"}, nil
	}
	var j store.GitHubJob
	switch {
	case ev.Push != nil:
		p := ev.Push
		j = store.GitHubJob{Delivery: ev.Delivery, Kind: jobPush, Repo: p.FullName}
		if reason := ignorePush(p); reason != "" {
			j.State, j.Note = store.JobDone, "ignored: "+reason
		}
		var err error
		if j.Payload, err = json.Marshal(p); err != nil {
			return 0, webhookReply{}, fmt.Errorf("encode push: %w", err)
		}
	case ev.PullRequest != nil:
		pr := ev.PullRequest
		j = store.GitHubJob{Delivery: ev.Delivery, Kind: jobPullRequest, Repo: pr.FullName}
		if reason := ignorePullRequest(pr); reason != "" {
			j.State, j.Note = store.JobDone, "ignored: "+reason
		}
		var err error
		if j.Payload, err = json.Marshal(pr); err != nil {
			return 0, webhookReply{}, fmt.Errorf("encode pull request: %w", err)
		}
	case ev.Installation != nil:
		j = store.GitHubJob{Delivery: ev.Delivery, Kind: jobInstallation}
		var err error
		if j.Payload, err = json.Marshal(ev.Installation); err != nil {
			return 0, webhookReply{}, fmt.Errorf("encode installation: %w", err)
		}
	default:
		return http.StatusOK, webhookReply{Status: "ignored", Reason: "event " + ev.Type + " is not used"}, nil
	}
	if _, err := g.st.CreateGitHubJob(ctx, j); errors.Is(err, store.ErrConflict) {
		return http.StatusOK, webhookReply{Status: "duplicate", Reason: "delivery " + ev.Delivery + " was received before"}, nil
	} else if err != nil {
		return 0, webhookReply{}, err
	}
	if j.State == store.JobDone {
		g.log.Info("delivery ignored", "delivery", ev.Delivery, "event", ev.Type, "repo", j.Repo, "reason", j.Note)
		return http.StatusOK, webhookReply{Status: "ignored", Reason: strings.TrimPrefix(j.Note, "ignored: ")}, nil
	}
	g.poke()
	return http.StatusAccepted, webhookReply{Status: "queued"}, nil
}

// ignorePush says why a push deploys nothing, or "" when it deploys.
func ignorePush(p *github.Push) string {
	switch {
	case p.InstallationID == 0:
		return "the push does not come from an installation of the App"
	case p.Deleted:
		return "ref " + p.Ref + " was deleted"
	case p.IsTag():
		return "tag push " + p.Ref
	case !p.IsDefaultBranch():
		return fmt.Sprintf("%s is not the default branch %s", p.Ref, p.DefaultBranch)
	}
	return ""
}

// ignorePullRequest says why a pull_request delivery changes no preview,
// or "" when it may.
func ignorePullRequest(p *github.PullRequest) string {
	switch {
	case p.InstallationID == 0:
		return "the pull request event does not come from an installation of the App"
	case p.Action == "labeled" || p.Action == "unlabeled":
		if !strings.EqualFold(p.Label, PreviewLabel) {
			return fmt.Sprintf("label %q is not %s", p.Label, PreviewLabel)
		}
	case p.Action == "opened" || p.Action == "synchronize" || p.Action == "reopened" || p.Action == "closed":
	default:
		return "pull request action " + p.Action + " changes no preview"
	}
	return ""
}
