package deploymgr_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/store"
)

// API tokens are listed without their secrets and revoked by ID: a user
// sees and revokes only their own, the admin everyone's; a revoked token
// stops working at once.
func TestTokensListAndRevoke(t *testing.T) {
	e := start(t)
	for _, u := range []string{"ann", "bob"} {
		if err := e.n.Store.PutToken(e.ctx, store.Token{Hash: deploymgr.HashToken(u + "-secret"), Name: u + "'s laptop", User: "github:" + u}); err != nil {
			t.Fatal(err)
		}
	}
	list := func(token string) []api.Token {
		t.Helper()
		res, body := e.do(http.MethodGet, "/api/v1/tokens", token, nil)
		var out []api.Token
		if err := json.Unmarshal([]byte(body), &out); res.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("GET /api/v1/tokens = %d %s", res.StatusCode, body)
		}
		for _, tk := range out {
			if tk.Token != "" || strings.Contains(body, deploymgr.HashToken(strings.TrimPrefix(tk.User, "github:")+"-secret")) {
				t.Errorf("the list shows a secret or a hash: %s", body)
			}
		}
		return out
	}

	// The admin creates one: the secret is in that answer only.
	res, body := e.do(http.MethodPost, "/api/v1/tokens", e.n.Token, strings.NewReader(`{"name":"ci"}`), "Content-Type", "application/json")
	var created api.Token
	if err := json.Unmarshal([]byte(body), &created); res.StatusCode != http.StatusCreated || err != nil || created.Token == "" || created.ID == "" || created.User != "admin" {
		t.Fatalf("POST /api/v1/tokens = %d %s", res.StatusCode, body)
	}

	ann := list("ann-secret")
	if len(ann) != 1 || ann[0].Name != "ann's laptop" || ann[0].User != "github:ann" || ann[0].ID == "" || ann[0].CreatedAt.IsZero() {
		t.Fatalf("ann's tokens = %+v", ann)
	}
	all := list(e.n.Token)
	if len(all) != 3 {
		t.Fatalf("the admin's list = %+v, want every user's 3", all)
	}
	idOf := func(user string) string {
		for _, tk := range all {
			if tk.User == user {
				return tk.ID
			}
		}
		t.Fatalf("no token of %s", user)
		return ""
	}

	// Ann cannot revoke Bob's (it does not exist for her), nor see it.
	if res, body := e.do(http.MethodDelete, "/api/v1/tokens/"+idOf("github:bob"), "ann-secret", nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("ann revoking bob's token = %d %s, want 404", res.StatusCode, body)
	}
	if res, _ := e.do(http.MethodGet, "/api/v1/components", "bob-secret", nil); res.StatusCode != http.StatusOK {
		t.Errorf("bob's token stopped working after ann's attempt: %d", res.StatusCode)
	}
	// Ann revokes her own: it is dead at once.
	if res, body := e.do(http.MethodDelete, "/api/v1/tokens/"+ann[0].ID, "ann-secret", nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("ann revoking her token = %d %s", res.StatusCode, body)
	}
	if res, _ := e.do(http.MethodGet, "/api/v1/tokens", "ann-secret", nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("revoked token still works: %d", res.StatusCode)
	}
	// The admin revokes Bob's.
	if res, body := e.do(http.MethodDelete, "/api/v1/tokens/"+idOf("github:bob"), e.n.Token, nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("admin revoking bob's token = %d %s", res.StatusCode, body)
	}
	if res, _ := e.do(http.MethodGet, "/api/v1/components", "bob-secret", nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("bob's revoked token still works: %d", res.StatusCode)
	}
	if left := list(created.Token); len(left) != 1 || left[0].ID != created.ID {
		t.Errorf("left after revoking: %+v", left)
	}
	if res, body := e.do(http.MethodDelete, "/api/v1/tokens/nonsense", e.n.Token, nil); res.StatusCode != http.StatusNotFound || !strings.Contains(body, "nonsense") {
		t.Errorf("revoking an unknown token = %d %s", res.StatusCode, body)
	}
}

// GET /deployments/{id} carries the manifest's [env]: the dashboard reads
// it there, through the API like everything else, not from the store.
func TestDeploymentShowsEnv(t *testing.T) {
	e := start(t)
	d := e.deploy("echo", echoFiles("hello"))
	got, err := e.c.Deployment(e.ctx, d.ID)
	if err != nil || got.Env["GREETING"] != "hello" {
		t.Fatalf("GET /deployments/%d env = %v %v", d.ID, got.Env, err)
	}
	ds, err := e.c.Deployments(e.ctx, "echo")
	if err != nil || len(ds) != 1 || ds[0].Env != nil {
		t.Errorf("the deployments list carries env (only GET /deployments/{id} should): %+v %v", ds, err)
	}
}

// One user holds at most store.MaxTokensPerUser tokens: the table does not
// grow without bound on one account's requests.
func TestTokensBounded(t *testing.T) {
	e := start(t)
	for i := range store.MaxTokensPerUser {
		if err := e.n.Store.PutToken(e.ctx, store.Token{Hash: deploymgr.HashToken(fmt.Sprint("s", i)), Name: "t", User: "admin"}); err != nil {
			t.Fatal(err)
		}
	}
	res, body := e.do(http.MethodPost, "/api/v1/tokens", e.n.Token, nil)
	if res.StatusCode != http.StatusConflict || !strings.Contains(body, "revoke") {
		t.Errorf("token number %d = %d %s, want 409 saying to revoke some", store.MaxTokensPerUser+1, res.StatusCode, body)
	}
}
