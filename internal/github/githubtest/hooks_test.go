package githubtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
)

// receiver is a webhook endpoint built on github.ParseWebhook.
type receiver struct {
	mu      sync.Mutex
	events  []github.Event
	headers []http.Header
}

func (rc *receiver) handler(secret []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ev, err := github.ParseWebhook(r, secret, 0)
		switch {
		case errors.Is(err, github.ErrSignature):
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.events = append(rc.events, ev)
		rc.headers = append(rc.headers, r.Header.Clone())
		rc.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}
}

func TestPushWebhook(t *testing.T) {
	s, repo, sha, _ := setup(t)
	rc := &receiver{}
	hook := httptest.NewServer(rc.handler(s.WebhookSecret))
	defer hook.Close()
	ctx := context.Background()

	resp, err := s.Push(ctx, hook.URL+"/webhooks/github", repo, "trunk", "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push answered %d", resp.StatusCode)
	}
	ev := rc.events[0]
	p := ev.Push
	if ev.Type != "push" || p == nil || !p.IsDefaultBranch() || p.After != sha || p.Before != githubtest.ZeroSHA ||
		!p.Created || p.InstallationID != inst || p.FullName != "octo-org/hello" || p.HeadCommit.SHA != sha ||
		p.HeadCommit.Message != "Deploy hello" {
		t.Fatalf("event %+v push %+v", ev, p)
	}
	h := rc.headers[0]
	if !strings.HasPrefix(h.Get("User-Agent"), "GitHub-Hookshot/") || !strings.HasPrefix(h.Get("X-Hub-Signature"), "sha1=") ||
		h.Get("X-GitHub-Hook-Installation-Target-Type") != "integration" || len(ev.Delivery) != 36 {
		t.Errorf("headers %v", h)
	}

	// Another branch: acknowledged, not the default branch.
	sha2 := repo.CommitTo("feature/x", map[string]string{"a": "b"}, "wip")
	resp, err = s.Push(ctx, hook.URL, repo, "refs/heads/feature/x", "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := rc.events[1].Push; p.IsDefaultBranch() || p.After != sha2 || p.Before != sha || p.Branch() != "feature/x" {
		t.Errorf("branch push %+v", p)
	}

	// Redelivery repeats the delivery ID.
	resp, err = s.Redeliver(ctx, ev.Delivery)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(rc.events) != 3 || rc.events[2].Delivery != ev.Delivery {
		t.Errorf("redelivery id %q, want %q", rc.events[2].Delivery, ev.Delivery)
	}
	if d := s.Deliveries(); len(d) != 3 || d[2].Status != http.StatusAccepted {
		t.Errorf("deliveries %+v", d)
	}

	// A receiver with another secret refuses the delivery.
	other := httptest.NewServer((&receiver{}).handler([]byte("not the secret")))
	defer other.Close()
	resp, err = s.Push(ctx, other.URL, repo, "trunk", "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong secret answered %d", resp.StatusCode)
	}

	// Deleting a branch.
	resp, err = s.Push(ctx, hook.URL, repo, "feature/x", sha2, githubtest.ZeroSHA)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := rc.events[3].Push; !p.Deleted || p.HeadCommit.SHA != "" {
		t.Errorf("delete push %+v", p)
	}
}

func TestDeliverOnlyLoopback(t *testing.T) {
	s := githubtest.New(t)
	// 192.0.2.0/24 is TEST-NET-1; the check refuses before any dial.
	if _, err := s.Deliver(context.Background(), "http://192.0.2.1/hook", "ping", map[string]any{}); err == nil {
		t.Fatal("delivery to a non-loopback address allowed")
	}
}

// TestPushPayloadMatchesFixture keeps the generated payload and the fixture
// (written from GitHub's documentation) in step: same keys at every level.
func TestPushPayloadMatchesFixture(t *testing.T) {
	s := githubtest.New(t)
	s.AddInstallation(inst, "octo-org", "Organization")
	repo := s.AddRepo("octo-org", "hello-velo", "main", inst)
	repo.Commit(map[string]string{"velo.toml": "x"}, "one")
	sha := repo.Commit(map[string]string{"velo.toml": "y", "hello.wasm": "z"}, "two")
	b, err := json.Marshal(s.PushPayload(repo, "main", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	fix, err := os.ReadFile("../testdata/push.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(fix, &want); err != nil {
		t.Fatal(err)
	}
	gk, wk := keys("", got), keys("", want)
	if !slices.Equal(gk, wk) {
		t.Errorf("payload keys differ from the fixture\nonly generated: %v\nonly fixture:   %v", minus(gk, wk), minus(wk, gk))
	}
	hc := got.(map[string]any)["head_commit"].(map[string]any)
	if hc["id"] != sha || len(hc["added"].([]any)) != 1 || len(hc["modified"].([]any)) != 1 {
		t.Errorf("head_commit %v", hc)
	}
}

// keys lists every key path in v; array elements share the path "[]".
func keys(prefix string, v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			out = append(out, prefix+"."+k)
			out = append(out, keys(prefix+"."+k, e)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, keys(prefix+"[]", e)...)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
