package githubtest_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"golang.org/x/oauth2"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
)

const inst = 42

// setup starts a stand-in with one repository holding one commit.
func setup(t *testing.T) (*githubtest.Server, *githubtest.Repo, string, *github.App) {
	t.Helper()
	s := githubtest.New(t)
	s.AddInstallation(inst, "octo-org", "Organization")
	repo := s.AddRepo("octo-org", "hello", "trunk", inst)
	sha := repo.Commit(map[string]string{
		"velo.toml":         "name = \"hello\"\n",
		"src/main.go":       "package main\n",
		"src/lib/util.go":   "package lib\n",
		"src-extra.txt":     "sorts before src/ in git order\n",
		"static/index.html": "<h1>hi</h1>\n",
	}, "Deploy hello")
	app, err := github.NewApp(s.Config(), s.Client())
	if err != nil {
		t.Fatal(err)
	}
	return s, repo, sha, app
}

func TestRepoQueries(t *testing.T) {
	s, repo, sha, app := setup(t)
	ctx := context.Background()

	branch, head, err := app.DefaultBranchHead(ctx, inst, "octo-org", "hello")
	if err != nil || branch != "trunk" || head != sha {
		t.Fatalf("DefaultBranchHead = %q %q %v, want trunk %s", branch, head, err, sha)
	}
	ci, err := app.Commit(ctx, inst, "octo-org", "hello", sha[:7])
	if err != nil || ci.SHA != sha || ci.Message != "Deploy hello" || ci.Author != "Mona Lisa" || ci.Time.IsZero() {
		t.Fatalf("Commit = %+v, %v", ci, err)
	}
	if _, err := app.Commit(ctx, inst, "octo-org", "hello", strings.Repeat("ab", 20)); err == nil {
		t.Fatal("unknown commit found")
	}

	// A new commit moves the head; the installation token is reused.
	sha2 := repo.Commit(map[string]string{"velo.toml": "name = \"hello2\"\n"}, "Second")
	if _, head, _ := app.DefaultBranchHead(ctx, inst, "octo-org", "hello"); head != sha2 {
		t.Fatalf("head %s after second commit, want %s", head, sha2)
	}
	if n := s.TokensIssued(); n != 1 {
		t.Errorf("%d installation tokens issued, want 1 (cached)", n)
	}

	insts, err := app.Installations(ctx)
	if err != nil || len(insts) != 1 || insts[0].ID != inst || insts[0].Account != "octo-org" || insts[0].AccountType != "Organization" {
		t.Fatalf("Installations = %+v, %v", insts, err)
	}
	repos, err := app.InstallationRepos(ctx, inst)
	if err != nil || len(repos) != 1 || repos[0].FullName != "octo-org/hello" || repos[0].DefaultBranch != "trunk" || !repos[0].Private {
		t.Fatalf("InstallationRepos = %+v, %v", repos, err)
	}
}

func TestEnterpriseBaseURL(t *testing.T) {
	s, _, sha, _ := setup(t)
	cfg := s.Config()
	cfg.APIURL = s.EnterpriseURL() // https://HOST/api/v3/
	app, err := github.NewApp(cfg, s.Client())
	if err != nil {
		t.Fatal(err)
	}
	if _, head, err := app.DefaultBranchHead(context.Background(), inst, "octo-org", "hello"); err != nil || head != sha {
		t.Fatalf("through /api/v3/: %s %v", head, err)
	}
}

func TestTarball(t *testing.T) {
	s, _, sha, app := setup(t)
	ctx := context.Background()
	rc, err := app.Tarball(ctx, inst, "octo-org", "hello", sha, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Typeflag != tar.TypeXGlobalHeader || hdr.PAXRecords["comment"] != sha {
		t.Fatalf("first entry %q type %c records %v, want pax global header with comment=sha", hdr.Name, hdr.Typeflag, hdr.PAXRecords)
	}
	prefix := "octo-org-hello-" + sha[:7] + "/"
	var names []string
	files := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[strings.TrimPrefix(hdr.Name, prefix)] = string(b)
		}
	}
	want := []string{
		prefix, prefix + "src-extra.txt", prefix + "src/", prefix + "src/lib/", prefix + "src/lib/util.go",
		prefix + "src/main.go", prefix + "static/", prefix + "static/index.html", prefix + "velo.toml",
	}
	if !slices.Equal(names, want) {
		t.Errorf("entries\n got %q\nwant %q", names, want)
	}
	if files["src/main.go"] != "package main\n" {
		t.Errorf("src/main.go = %q", files["src/main.go"])
	}

	dl := s.Downloads()
	if len(dl) != 1 || dl[0].Status != http.StatusOK {
		t.Fatalf("downloads %+v, want one successful", dl)
	}
	if dl[0].Authorization != "" {
		t.Errorf("installation token leaked to the download host: %q", dl[0].Authorization)
	}

	// Over the cap: reading fails, it does not truncate silently.
	rc, err = app.Tarball(ctx, inst, "octo-org", "hello", sha, 64)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if !errors.Is(err, github.ErrTooLarge) {
		t.Fatalf("capped tarball: err = %v, want ErrTooLarge", err)
	}

	if _, err := app.Tarball(ctx, inst, "octo-org", "nope", sha, 1<<20); !errors.Is(err, github.ErrNotFound) {
		t.Fatalf("missing repo: err = %v, want ErrNotFound", err)
	}
}

// TestTarballLeakDetected shows the leak check can fail: a client that
// follows the redirect with the token still set is caught.
func TestTarballLeakDetected(t *testing.T) {
	s, _, sha, _ := setup(t)
	req, _ := http.NewRequest("GET", s.URL()+"repos/octo-org/hello/tarball/"+sha, nil)
	req.Header.Set("Authorization", "token "+s.InstallationToken(inst))
	resp, err := s.Client().Do(req) // follows the 302, same host: keeps the header
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	dl := s.Downloads()
	if resp.StatusCode != 200 || len(dl) != 1 || !strings.HasPrefix(dl[0].Authorization, "token ghs_") {
		t.Fatalf("status %d downloads %+v: leak not recorded", resp.StatusCode, dl)
	}

	// The codeload URL stands alone: a wrong token is refused.
	resp, err = s.Client().Get(s.WebURL() + "/_codeload/octo-org/hello/legacy.tar.gz/" + sha + "?token=forged")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("forged codeload token: %d", resp.StatusCode)
	}
}

func TestDeployments(t *testing.T) {
	s, _, sha, app := setup(t)
	ctx := context.Background()
	id, err := app.CreateDeployment(ctx, inst, "octo-org", "hello", sha, "", "Velo deploy")
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 300)
	for _, st := range []struct{ state, desc, env, log string }{
		{github.StateInProgress, "Building", "", "https://velo.example.com/deployments/1"},
		{github.StateSuccess, long, "https://hello.velo.example.com", "https://velo.example.com/deployments/1"},
	} {
		if err := app.SetDeploymentStatus(ctx, inst, "octo-org", "hello", id, st.state, st.desc, st.env, st.log); err != nil {
			t.Fatalf("%s: %v", st.state, err)
		}
	}
	if err := app.SetDeploymentStatus(ctx, inst, "octo-org", "hello", id, "exploded", "", "", ""); err == nil {
		t.Error("invalid state accepted")
	}
	if err := app.SetDeploymentStatus(ctx, inst, "octo-org", "hello", id+1000, "success", "", "", ""); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("unknown deployment: %v, want ErrNotFound", err)
	}
	ds := s.Deployments("octo-org", "hello")
	if len(ds) != 1 {
		t.Fatalf("%d deployments", len(ds))
	}
	d := ds[0]
	if d.ID != id || d.SHA != sha || d.Ref != sha || d.Environment != "production" || d.AutoMerge ||
		d.RequiredContexts == nil || len(d.RequiredContexts) != 0 || !d.ProductionEnvironment || d.TransientEnvironment ||
		d.Description != "Velo deploy" {
		t.Errorf("deployment %+v", d)
	}
	if len(d.Statuses) != 2 || d.Statuses[0].State != "in_progress" || d.Statuses[1].State != "success" {
		t.Fatalf("statuses %+v", d.Statuses)
	}
	if got := d.Statuses[1]; len([]rune(got.Description)) != 140 || got.EnvironmentURL != "https://hello.velo.example.com" ||
		got.LogURL != "https://velo.example.com/deployments/1" {
		t.Errorf("success status %+v", got)
	}
	if d.Statuses[0].EnvironmentURL != "" {
		t.Errorf("empty environment URL sent as %q", d.Statuses[0].EnvironmentURL)
	}

	// The API lists them back like GitHub: newest status first.
	var got []struct{ State string }
	getJSON(t, s, s.InstallationToken(inst), fmt.Sprintf("repos/octo-org/hello/deployments/%d/statuses", id), &got)
	if len(got) != 2 || got[0].State != "success" {
		t.Errorf("listed statuses %+v", got)
	}
}

func getJSON(t *testing.T, s *githubtest.Server, token, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL()+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: decode: %v", path, err)
	}
	return resp.StatusCode
}

func TestInstallationTokenScope(t *testing.T) {
	s, _, sha, app := setup(t)
	ctx := context.Background()
	s.AddRepo("someone", "other", "main", 43)
	other := s.InstallationToken(43)

	var e struct {
		Message          string `json:"message"`
		DocumentationURL string `json:"documentation_url"`
	}
	if code := getJSON(t, s, other, "repos/octo-org/hello", &e); code != 404 || e.Message != "Not Found" || e.DocumentationURL == "" {
		t.Errorf("token of another installation: %d %+v, want 404", code, e)
	}
	if code := getJSON(t, s, "ghs_forged", "repos/octo-org/hello", &e); code != 401 || e.Message != "Bad credentials" {
		t.Errorf("forged token: %d %+v, want 401", code, e)
	}
	if code := getJSON(t, s, "", "repos/octo-org/hello", &e); code != 404 {
		t.Errorf("no token on a private repo: %d, want 404", code)
	}
	if _, _, err := app.DefaultBranchHead(ctx, 43, "octo-org", "hello"); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("App acting as installation 43 on 42's repo: %v, want ErrNotFound", err)
	}
	if _, err := app.Tarball(ctx, 43, "octo-org", "hello", sha, 1<<20); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("tarball through the wrong installation: %v, want ErrNotFound", err)
	}
	if _, err := app.InstallationRepos(ctx, 999); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("token for a missing installation: %v, want ErrNotFound", err)
	}
	s.RemoveInstallation(inst)
	if _, _, err := app.DefaultBranchHead(ctx, inst, "octo-org", "hello"); err == nil {
		t.Error("uninstalled App still reads the repo")
	}
}

func signJWT(t *testing.T, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	k, err := jwt.ParseRSAPrivateKeyFromPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAppJWT(t *testing.T) {
	s := githubtest.New(t)
	s.AddInstallation(inst, "octo-org", "Organization")
	now := time.Now().Unix()
	id := strconv.FormatInt(s.AppID, 10)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(otherKey)})
	tests := []struct {
		name string
		jwt  string
		ok   bool
	}{
		{"string iss", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": id, "iat": now - 60, "exp": now + 540}), true},
		{"numeric iss", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": s.AppID, "iat": now - 60, "exp": now + 540}), true},
		{"client id iss", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": s.ClientID, "iat": now - 60, "exp": now + 540}), true},
		{"iat within skew", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": id, "iat": now + 30, "exp": now + 600}), true},
		{"expired", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": id, "iat": now - 1200, "exp": now - 600}), false},
		{"exp too far", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": id, "iat": now, "exp": now + 1200}), false},
		{"iat in the future", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": id, "iat": now + 300, "exp": now + 600}), false},
		{"fractional iat", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": id, "iat": float64(now) - 0.5, "exp": now + 60}), false},
		{"no exp", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": id, "iat": now}), false},
		{"wrong iss", signJWT(t, s.PrivateKeyPEM, jwt.MapClaims{"iss": "1", "iat": now, "exp": now + 60}), false},
		{"wrong key", signJWT(t, otherPEM, jwt.MapClaims{"iss": id, "iat": now, "exp": now + 60}), false},
		{"HS256", func() string {
			tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": id, "iat": now, "exp": now + 60}).SignedString(s.PrivateKeyPEM)
			return tok
		}(), false},
		{"garbage", "not.a.jwt", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			code := getJSON(t, s, tt.jwt, "app/installations", &body)
			if tt.ok && code != 200 {
				t.Fatalf("refused: %d %v", code, body)
			}
			if !tt.ok {
				e, _ := body.(map[string]any)
				if code != 401 || e["message"] == "" || e["documentation_url"] == nil {
					t.Fatalf("got %d %v, want 401 with GitHub's error body", code, body)
				}
			}
		})
	}

	// An App client holding the wrong key gets nowhere.
	cfg := s.Config()
	cfg.PrivateKey = otherPEM
	app, err := github.NewApp(cfg, s.Client())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Installations(context.Background()); err == nil {
		t.Error("Installations with the wrong key succeeded")
	}
	if _, err := app.InstallationRepos(context.Background(), inst); err == nil {
		t.Error("installation token issued for a JWT signed with the wrong key")
	}
	if n := s.TokensIssued(); n != 0 {
		t.Errorf("%d tokens issued", n)
	}
}

func TestPagination(t *testing.T) {
	s := githubtest.New(t)
	for i := range 150 {
		s.AddRepo("big-org", fmt.Sprintf("repo-%03d", i), "main", 7)
	}
	s.AddInstallation(8, "small", "User")
	tok := s.AddUser("mona", 7)
	app, err := github.NewApp(s.Config(), s.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	repos, err := app.InstallationRepos(ctx, 7)
	if err != nil || len(repos) != 150 || repos[149].Name != "repo-149" {
		t.Fatalf("InstallationRepos: %d repos, %v", len(repos), err)
	}
	repos, err = app.UserInstallationRepos(ctx, tok, 7)
	if err != nil || len(repos) != 150 {
		t.Fatalf("UserInstallationRepos: %d repos, %v", len(repos), err)
	}
}

func TestUserAndOAuth(t *testing.T) {
	s, _, _, app := setup(t)
	s.AddRepo("someone", "other", "main", 43)
	tok := s.AddUser("mona", inst)
	ctx := context.Background()

	login, id, err := app.User(ctx, tok)
	if err != nil || login != "mona" || id == 0 {
		t.Fatalf("User = %q %d %v", login, id, err)
	}
	insts, err := app.UserInstallations(ctx, tok)
	if err != nil || len(insts) != 1 || insts[0].ID != inst {
		t.Fatalf("UserInstallations = %+v %v", insts, err)
	}
	repos, err := app.UserInstallationRepos(ctx, tok, inst)
	if err != nil || len(repos) != 1 || repos[0].FullName != "octo-org/hello" {
		t.Fatalf("UserInstallationRepos = %+v %v", repos, err)
	}
	if _, err := app.UserInstallationRepos(ctx, tok, 43); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("another user's installation: %v, want ErrNotFound", err)
	}
	if _, _, err := app.User(ctx, "ghu_forged"); err == nil {
		t.Error("forged user token accepted")
	}

	// The web flow: authorize redirects back with code and state, the code
	// is exchanged once for the user's token.
	callback := "http://127.0.0.1:1/auth/github/callback"
	verifier := oauth2.GenerateVerifier()
	authURL := app.AuthCodeURL(callback, "st4te", verifier)
	if !strings.HasPrefix(authURL, s.WebURL()+"/login/oauth/authorize?") {
		t.Fatalf("auth URL %s", authURL)
	}
	if q, _ := url.Parse(authURL); q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("code_challenge") == "" {
		t.Fatalf("auth URL without an S256 PKCE challenge: %s", authURL)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authorize := func(u string) string {
		t.Helper()
		resp, err := noFollow.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), callback+"?") || loc.Query().Get("state") != "st4te" {
			t.Fatalf("authorize: %d %s", resp.StatusCode, loc)
		}
		return loc.Query().Get("code")
	}
	code := authorize(authURL)
	// A code bound to a challenge is worth nothing without its verifier:
	// a wrong or missing one fails, and does not use the code up.
	if _, err := app.ExchangeCode(ctx, callback, code, oauth2.GenerateVerifier()); err == nil || !strings.Contains(err.Error(), "bad_verification_code") {
		t.Errorf("ExchangeCode with a wrong verifier: %v, want bad_verification_code", err)
	}
	resp, err := http.PostForm(s.WebURL()+"/login/oauth/access_token", url.Values{"client_id": {s.ClientID}, "client_secret": {s.ClientSecret}, "code": {code}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if v, _ := url.ParseQuery(string(b)); v.Get("error") != "bad_verification_code" {
		t.Errorf("exchange without code_verifier: %q, want bad_verification_code", b)
	}
	got, err := app.ExchangeCode(ctx, callback, code, verifier)
	if err != nil || got != tok {
		t.Fatalf("ExchangeCode = %q %v, want the user's token", got, err)
	}
	if _, err := app.ExchangeCode(ctx, callback, code, verifier); err == nil {
		t.Error("code exchanged twice")
	}
	// Only S256 is accepted, as on GitHub.
	if resp, err := noFollow.Get(strings.Replace(authURL, "code_challenge_method=S256", "code_challenge_method=plain", 1)); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("authorize with code_challenge_method=plain: %v %v, want 400", resp.StatusCode, err)
	}
	// Without PKCE (GitHub does not require it) the code alone works.
	plain := app.OAuthConfig(callback).AuthCodeURL("st4te")
	resp, err = http.PostForm(s.WebURL()+"/login/oauth/access_token", url.Values{"client_id": {s.ClientID}, "client_secret": {s.ClientSecret}, "code": {authorize(plain)}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if v, _ := url.ParseQuery(string(b)); v.Get("access_token") != tok {
		t.Errorf("exchange of a code issued without PKCE: %q", b)
	}

	// Form-encoded answer unless JSON is asked for, as on GitHub.
	resp, err = http.PostForm(s.WebURL()+"/login/oauth/access_token", url.Values{"client_id": {s.ClientID}, "client_secret": {"wrong"}, "code": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if v, err := url.ParseQuery(string(b)); err != nil || v.Get("error") != "incorrect_client_credentials" {
		t.Errorf("bad secret answer %q", b)
	}
}

func TestManifestFlow(t *testing.T) {
	s := githubtest.New(t)
	s.AddInstallation(inst, "octo-org", "Organization")
	ctx := context.Background()
	manifest, err := json.Marshal(github.AppManifest("velo-prod", "http://127.0.0.1:9/"))
	if err != nil {
		t.Fatal(err)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.PostForm(s.WebURL()+"/settings/apps/new?state=abc", url.Values{"manifest": {string(manifest)}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc.Path != github.ManifestRedirectPath || loc.Query().Get("state") != "abc" {
		t.Fatalf("manifest post: %d %s", resp.StatusCode, loc)
	}
	if m := s.Manifests(); len(m) != 1 || m[0]["default_events"].([]any)[0] != "push" {
		t.Errorf("manifests %v", m)
	}
	creds, err := github.ManifestConversion(ctx, s.URL(), loc.Query().Get("code"), s.Client())
	if err != nil {
		t.Fatal(err)
	}
	if creds.ID != s.AppID || creds.PEM != string(s.PrivateKeyPEM) || creds.WebhookSecret != string(s.WebhookSecret) ||
		creds.ClientID != s.ClientID || creds.ClientSecret != s.ClientSecret || creds.Slug == "" || creds.HTMLURL == "" {
		t.Fatalf("credentials %+v", creds)
	}
	if _, err := github.ManifestConversion(ctx, s.URL(), loc.Query().Get("code"), s.Client()); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("code used twice: %v, want ErrNotFound", err)
	}
	// The credentials are a working App.
	app, err := github.NewApp(creds.Config(s.URL(), s.WebURL()), s.Client())
	if err != nil {
		t.Fatal(err)
	}
	if insts, err := app.Installations(ctx); err != nil || len(insts) != 1 {
		t.Fatalf("App from manifest: %v %v", insts, err)
	}
	if _, err := github.ManifestConversion(ctx, s.URL(), s.ManifestCode(), s.Client()); err != nil {
		t.Errorf("ManifestCode: %v", err)
	}
}
