package github

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testSecret = []byte("It's a Secret to Everybody")

func sign(body, secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func sign1(body, secret []byte) string {
	m := hmac.New(sha1.New, secret)
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// delivery builds a request the way GitHub sends it.
func delivery(event string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "GitHub-Hookshot/a1b2c3d")
	r.Header.Set(HeaderEvent, event)
	r.Header.Set(HeaderDelivery, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	r.Header.Set(HeaderSignature, sign(body, testSecret))
	r.Header.Set(HeaderSignature1, sign1(body, testSecret))
	return r
}

func TestParseWebhookFixtures(t *testing.T) {
	const (
		sha     = "2f1a5c8e4d3b6a7980c1d2e3f4a5b6c7d8e9f0a1"
		before  = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
		feature = "9c2b7f6e5d4c3b2a1908f7e6d5c4b3a291807f6e"
	)
	tests := []struct {
		file, event string
		check       func(t *testing.T, ev Event)
	}{
		{"push.json", "push", func(t *testing.T, ev Event) {
			p := ev.Push
			want := Push{
				InstallationID: 4242, RepoID: 186853002, Owner: "octo-org", Repo: "hello-velo",
				FullName: "octo-org/hello-velo", Ref: "refs/heads/main", DefaultBranch: "main",
				Before: before, After: sha, Pusher: "octocat", Sender: "octocat",
				Compare: "https://github.com/octo-org/hello-velo/compare/6113728f27ae...2f1a5c8e4d3b",
				Changed: []string{"hello.wasm", "velo.toml"}, Commits: 1,
				HeadCommit: CommitInfo{
					SHA: sha, Message: "Deploy hello", Author: "Mona Lisa", AuthorLogin: "octocat",
					Time: time.Date(2024, 5, 16, 13, 1, 20, 0, time.UTC),
					URL:  "https://github.com/octo-org/hello-velo/commit/" + sha,
				},
			}
			if !p.HeadCommit.Time.Equal(want.HeadCommit.Time) {
				t.Errorf("head commit time %v, want %v", p.HeadCommit.Time, want.HeadCommit.Time)
			}
			p.HeadCommit.Time = want.HeadCommit.Time
			if !reflect.DeepEqual(*p, want) {
				t.Errorf("push\n got %+v\nwant %+v", *p, want)
			}
			if !p.ChangesKnown() {
				t.Error("a fast-forward of one commit: changes not known")
			}
			if !p.IsDefaultBranch() || p.IsTag() || p.Branch() != "main" {
				t.Errorf("default=%v tag=%v branch=%q", p.IsDefaultBranch(), p.IsTag(), p.Branch())
			}
		}},
		{"push_branch.json", "push", func(t *testing.T, ev Event) {
			p := ev.Push
			if p.IsDefaultBranch() || p.IsTag() || p.Branch() != "feature/login" || p.After != feature {
				t.Errorf("branch push: %+v", p)
			}
		}},
		{"push_tag.json", "push", func(t *testing.T, ev Event) {
			p := ev.Push
			if p.IsDefaultBranch() || !p.IsTag() || !p.Created || p.Branch() != "" {
				t.Errorf("tag push: %+v", p)
			}
		}},
		{"push_delete.json", "push", func(t *testing.T, ev Event) {
			p := ev.Push
			if !p.Deleted || p.After != zeroSHA || p.HeadCommit != (CommitInfo{}) || p.IsDefaultBranch() {
				t.Errorf("delete push: %+v", p)
			}
		}},
		{"ping.json", "ping", func(t *testing.T, ev Event) {
			if !ev.Ping || ev.Push != nil || ev.Installation != nil {
				t.Errorf("ping: %+v", ev)
			}
		}},
		{"pull_request_labeled_fork.json", "pull_request", func(t *testing.T, ev Event) {
			p := ev.PullRequest
			if p == nil || ev.Action != "labeled" {
				t.Fatalf("pull_request = %+v", ev)
			}
			want := PullRequest{
				Action: "labeled", InstallationID: 4242, RepoID: 186853002, Owner: "octo-org", Repo: "hello-velo",
				FullName: "octo-org/hello-velo", Number: 7, Title: "Shout the greeting",
				HTMLURL: "https://github.com/octo-org/hello-velo/pull/7",
				HeadSHA: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", HeadRef: "shout", HeadRepo: "mallory/hello-velo",
				Fork: true, Labels: []string{"velo-preview"}, Label: "velo-preview", Sender: "octocat", Author: "mallory",
			}
			if !reflect.DeepEqual(*p, want) {
				t.Errorf("pull request =\n%+v, want\n%+v", *p, want)
			}
			if !p.HasLabel("Velo-Preview") {
				t.Error("HasLabel is not case-insensitive")
			}
		}},
		{"installation_created.json", "installation", func(t *testing.T, ev Event) {
			ie := ev.Installation
			if ev.Action != "created" || ie == nil || ie.Installation.ID != 4242 ||
				ie.Installation.Account != "octo-org" || ie.Installation.AccountType != "Organization" ||
				ie.Installation.RepositorySelection != "selected" || ie.Sender != "octocat" {
				t.Fatalf("installation: %+v", ie)
			}
			if len(ie.Added) != 2 || len(ie.Removed) != 0 {
				t.Fatalf("added %v removed %v", ie.Added, ie.Removed)
			}
			want := Repo{ID: 186853002, Owner: "octo-org", Name: "hello-velo", FullName: "octo-org/hello-velo", Private: true}
			if ie.Added[0] != want {
				t.Errorf("repo %+v, want %+v", ie.Added[0], want)
			}
		}},
		{"installation_repositories_added.json", "installation_repositories", func(t *testing.T, ev Event) {
			ie := ev.Installation
			if ev.Action != "added" || ie == nil || ie.Installation.ID != 4242 || len(ie.Added) != 1 ||
				ie.Added[0].FullName != "octo-org/site" || ie.Added[0].Owner != "octo-org" || ie.Added[0].Private {
				t.Errorf("installation_repositories: %+v", ie)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			ev, err := ParseWebhook(delivery(tt.event, fixture(t, tt.file)), testSecret, 0)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != tt.event || ev.Delivery != "72d3162e-cc78-11e3-81ab-4c9367dc0958" {
				t.Errorf("type %q delivery %q", ev.Type, ev.Delivery)
			}
			if (ev.Push != nil) != (tt.event == "push") {
				t.Fatalf("push payload presence wrong: %+v", ev)
			}
			tt.check(t, ev)
		})
	}
}

func TestParseWebhookSignature(t *testing.T) {
	body := fixture(t, "push.json")
	tests := []struct {
		name   string
		edit   func(r *http.Request)
		secret []byte
	}{
		{"missing signature", func(r *http.Request) {
			r.Header.Del(HeaderSignature)
			r.Header.Del(HeaderSignature1)
		}, testSecret},
		{"wrong signature", func(r *http.Request) {
			r.Header.Set(HeaderSignature, sign([]byte("other body"), testSecret))
		}, testSecret},
		{"wrong secret", func(r *http.Request) {}, []byte("another secret")},
		{"sha1 only", func(r *http.Request) { r.Header.Del(HeaderSignature) }, testSecret},
		{"sha1 in sha256 header", func(r *http.Request) {
			r.Header.Set(HeaderSignature, sign1(body, testSecret))
		}, testSecret},
		{"not hex", func(r *http.Request) { r.Header.Set(HeaderSignature, "sha256=zz") }, testSecret},
		{"bare digest", func(r *http.Request) {
			r.Header.Set(HeaderSignature, strings.TrimPrefix(sign(body, testSecret), "sha256="))
		}, testSecret},
		{"truncated", func(r *http.Request) {
			r.Header.Set(HeaderSignature, sign(body, testSecret)[:40])
		}, testSecret},
		{"no secret configured", func(r *http.Request) {}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := delivery("push", body)
			tt.edit(r)
			ev, err := ParseWebhook(r, tt.secret, 0)
			if !errors.Is(err, ErrSignature) {
				t.Fatalf("err = %v, want ErrSignature", err)
			}
			if ev.Push != nil || ev.Type != "" {
				t.Errorf("event leaked from an unverified delivery: %+v", ev)
			}
		})
	}
}

func TestParseWebhookPayloadErrors(t *testing.T) {
	t.Run("malformed json", func(t *testing.T) {
		_, err := ParseWebhook(delivery("push", []byte(`{"ref": [`)), testSecret, 0)
		if !errors.Is(err, ErrPayload) || errors.Is(err, ErrSignature) {
			t.Fatalf("err = %v, want ErrPayload", err)
		}
	})
	t.Run("push without after", func(t *testing.T) {
		body := []byte(`{"ref":"refs/heads/main","repository":{"name":"r","owner":{"login":"o"}}}`)
		_, err := ParseWebhook(delivery("push", body), testSecret, 0)
		if !errors.Is(err, ErrPayload) {
			t.Fatalf("err = %v, want ErrPayload", err)
		}
	})
	t.Run("missing event header", func(t *testing.T) {
		r := delivery("push", fixture(t, "push.json"))
		r.Header.Del(HeaderEvent)
		if _, err := ParseWebhook(r, testSecret, 0); !errors.Is(err, ErrPayload) {
			t.Fatalf("err = %v, want ErrPayload", err)
		}
	})
	t.Run("unsupported content type", func(t *testing.T) {
		r := delivery("push", fixture(t, "push.json"))
		r.Header.Set("Content-Type", "text/plain")
		if _, err := ParseWebhook(r, testSecret, 0); !errors.Is(err, ErrPayload) {
			t.Fatalf("err = %v, want ErrPayload", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		body := fixture(t, "push.json")
		_, err := ParseWebhook(delivery("push", body), testSecret, int64(len(body)-1))
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		if _, err := ParseWebhook(delivery("push", body), testSecret, int64(len(body))); err != nil {
			t.Fatalf("body of exactly the limit: %v", err)
		}
	})
}

func TestParseWebhookFormEncoded(t *testing.T) {
	// A hook configured with content type application/x-www-form-urlencoded
	// carries the JSON in the "payload" field; the signature covers the
	// whole form body.
	body := []byte("payload=" + url.QueryEscape(string(fixture(t, "push.json"))))
	r := delivery("push", body)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	ev, err := ParseWebhook(r, testSecret, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Push == nil || !ev.Push.IsDefaultBranch() {
		t.Fatalf("push not decoded from form: %+v", ev)
	}
}

func TestParseWebhookOtherEvents(t *testing.T) {
	ev, err := ParseWebhook(delivery("issues", []byte(`{"action":"opened"}`)), testSecret, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "issues" || ev.Push != nil || ev.Installation != nil || ev.Ping {
		t.Errorf("other event: %+v", ev)
	}
	// Even an event nobody reads must be signed.
	r := delivery("issues", []byte(`{"action":"opened"}`))
	r.Header.Set(HeaderSignature, sign([]byte("x"), testSecret))
	if _, err := ParseWebhook(r, testSecret, 0); !errors.Is(err, ErrSignature) {
		t.Fatalf("err = %v, want ErrSignature", err)
	}
}

func FuzzParseWebhook(f *testing.F) {
	for _, s := range []struct{ event, file string }{
		{"push", "push.json"}, {"push", "push_branch.json"}, {"push", "push_tag.json"},
		{"push", "push_delete.json"}, {"ping", "ping.json"},
		{"installation", "installation_created.json"},
		{"installation_repositories", "installation_repositories_added.json"},
		{"pull_request", "pull_request_labeled_fork.json"},
	} {
		f.Add(s.event, fixture(f, s.file))
	}
	f.Add("push", []byte(`{"ref":null,"repository":{}}`))
	f.Add("pull_request", []byte(`{"action":"opened","number":1,"pull_request":{"head":{"sha":"x","repo":null}},"repository":{"name":"r","owner":{"login":"o"}}}`))
	f.Add("installation", []byte(`{"installation":{"id":-1},"repositories":[null]}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := ParseWebhook(delivery(event, body), testSecret, 1<<20)
		if errors.Is(err, ErrSignature) {
			t.Fatalf("correctly signed delivery refused: %v", err)
		}
		if err != nil {
			return
		}
		if ev.Push != nil && !ev.Push.Deleted && !isSHA(ev.Push.After) {
			t.Fatalf("push accepted with after %q", ev.Push.After)
		}
		if pr := ev.PullRequest; pr != nil && (pr.Number <= 0 || !isSHA(pr.HeadSHA) || pr.Owner == "" || pr.Repo == "") {
			t.Fatalf("pull request accepted with number %d, head %q, repo %q/%q", pr.Number, pr.HeadSHA, pr.Owner, pr.Repo)
		}
		if ev.Installation != nil && ev.Installation.Installation.ID == 0 {
			t.Fatal("installation event accepted without an installation id")
		}
	})
}
