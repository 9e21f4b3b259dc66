package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"

	"github.com/velo-run/velo/internal/github"
)

// docsURL is the documentation_url GitHub puts in its error bodies.
const docsURL = "https://docs.github.com/rest"

// DefaultMaxPushCommits is the most commits GitHub lists in a push
// webhook's commits array (the 20 of its documentation applies to timeline
// events only).
const DefaultMaxPushCommits = 2048

// testKey is shared by every Server in the process: generating a 2048-bit
// RSA key takes long enough to matter when each test starts a Server.
// Servers still differ in App ID and secrets.
var testKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

// Server is a running stand-in for GitHub. Its exported fields are the App's
// credentials; change them only before the first request.
type Server struct {
	AppID         int64
	AppSlug       string
	PrivateKeyPEM []byte
	WebhookSecret []byte
	ClientID      string
	ClientSecret  string
	// MaxPushCommits caps the commits a push payload lists (0:
	// DefaultMaxPushCommits, GitHub's); tests lower it to see Velo cope
	// with a cut list.
	MaxPushCommits int

	t   testing.TB
	srv *httptest.Server
	key *rsa.PrivateKey

	mu            sync.Mutex
	nextID        int64
	installations map[int64]*installation
	repos         map[string]*Repo // by lower-case "owner/name"
	instTokens    map[string]instToken
	tokensIssued  int
	users         map[string]*user // by token
	webUser       string
	oauthCodes    map[string]oauthCode
	manifestCodes map[string]map[string]any
	manifests     []map[string]any
	archiveTokens map[string]archiveToken
	deploys       map[int64][]*Deployment // by repo ID
	downloads     []Download
	deliveries    []Delivery
	pulls         map[int64][]*PullRequest // by repo ID
	prCounter     int
	comments      map[int64][]*Comment // by repo ID
}

type installation struct {
	id          int64
	account     string
	accountID   int64
	accountType string
	created     time.Time
}

type instToken struct {
	installation int64
	expires      time.Time
}

type archiveToken struct {
	repo    *Repo
	sha     string
	expires time.Time
}

// New starts a stand-in on 127.0.0.1, closed when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	key, err := testKey()
	if err != nil {
		t.Fatalf("githubtest: generate key: %v", err)
	}
	s := &Server{
		AppID:         100000 + randInt(900000),
		AppSlug:       "velo-test",
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		WebhookSecret: []byte(randHex(20)),
		ClientID:      "Iv1." + randHex(8),
		ClientSecret:  randHex(20),
		t:             t,
		key:           key,
		nextID:        1000,
		installations: map[int64]*installation{},
		repos:         map[string]*Repo{},
		instTokens:    map[string]instToken{},
		users:         map[string]*user{},
		oauthCodes:    map[string]oauthCode{},
		manifestCodes: map[string]map[string]any{},
		archiveTokens: map[string]archiveToken{},
		deploys:       map[int64][]*Deployment{},
		pulls:         map[int64][]*PullRequest{},
		comments:      map[int64][]*Comment{},
	}
	s.srv = httptest.NewServer(s.routes())
	t.Cleanup(s.srv.Close)
	return s
}

// URL returns the REST API base with the trailing slash go-github expects,
// the stand-in's api.github.com. The same API also answers under /api/v3/,
// as GitHub Enterprise Server does.
func (s *Server) URL() string { return s.srv.URL + "/" }

// EnterpriseURL returns the API base in GitHub Enterprise Server's form.
func (s *Server) EnterpriseURL() string { return s.srv.URL + "/api/v3/" }

// WebURL returns the web base without a trailing slash, the stand-in's
// github.com.
func (s *Server) WebURL() string { return s.srv.URL }

// Client returns an HTTP client for the stand-in.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Config returns a github.Config for this App on this server.
func (s *Server) Config() github.Config {
	return github.Config{
		AppID:         s.AppID,
		PrivateKey:    s.PrivateKeyPEM,
		WebhookSecret: s.WebhookSecret,
		ClientID:      s.ClientID,
		ClientSecret:  s.ClientSecret,
		APIURL:        s.URL(),
		WebURL:        s.WebURL(),
	}
}

// AddInstallation installs the App on account ("User" or "Organization").
// AddRepo does it implicitly, as a "User" account, for unknown IDs.
func (s *Server) AddInstallation(id int64, account, accountType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addInstallationLocked(id, account, accountType)
}

func (s *Server) addInstallationLocked(id int64, account, accountType string) *installation {
	if in, ok := s.installations[id]; ok {
		return in
	}
	in := &installation{id: id, account: account, accountID: s.newIDLocked(), accountType: accountType, created: time.Now().UTC()}
	s.installations[id] = in
	return in
}

// RemoveInstallation uninstalls the App: its tokens stop working and its
// repositories disappear for it.
func (s *Server) RemoveInstallation(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.installations, id)
	for k, r := range s.repos {
		if r.InstallationID == id {
			delete(s.repos, k)
		}
	}
}

// InstallationToken issues an installation token directly, as if the App
// had asked for it; for tests that need a token without an App client.
func (s *Server) InstallationToken(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.installations[id]; !ok {
		s.t.Fatalf("githubtest: no installation %d", id)
	}
	tok, _ := s.issueInstTokenLocked(id)
	return tok
}

// TokensIssued returns how many installation tokens were issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokensIssued
}

func (s *Server) issueInstTokenLocked(id int64) (string, time.Time) {
	tok := "ghs_" + randAlnum(36)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	s.instTokens[tok] = instToken{installation: id, expires: exp}
	s.tokensIssued++
	return tok, exp
}

func (s *Server) newIDLocked() int64 {
	s.nextID++
	return s.nextID
}

// routes serves the API at / and, for Enterprise-style clients, at /api/v3/.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// App (JWT).
	mux.HandleFunc("GET /app", s.appJWT(s.getApp))
	mux.HandleFunc("GET /app/installations", s.appJWT(s.listInstallations))
	mux.HandleFunc("GET /app/installations/{id}", s.appJWT(s.getInstallation))
	mux.HandleFunc("POST /app/installations/{id}/access_tokens", s.appJWT(s.createInstallationToken))
	// Installation token.
	mux.HandleFunc("GET /installation/repositories", s.installationRepos)
	mux.HandleFunc("GET /repos/{owner}/{repo}", s.repoAuth(s.getRepo))
	mux.HandleFunc("GET /repos/{owner}/{repo}/branches/{branch...}", s.repoAuth(s.getBranch))
	mux.HandleFunc("GET /repos/{owner}/{repo}/commits/{ref...}", s.repoAuth(s.getCommit))
	mux.HandleFunc("GET /repos/{owner}/{repo}/compare/{basehead...}", s.repoAuth(s.compare))
	mux.HandleFunc("POST /repos/{owner}/{repo}/issues/{number}/comments", s.repoAuth(s.createComment))
	mux.HandleFunc("GET /repos/{owner}/{repo}/issues/{number}/comments", s.repoAuth(s.listComments))
	mux.HandleFunc("PATCH /repos/{owner}/{repo}/issues/comments/{id}", s.repoAuth(s.editComment))
	mux.HandleFunc("GET /repos/{owner}/{repo}/collaborators/{username}/permission", s.repoAuth(s.permission))
	mux.HandleFunc("GET /repos/{owner}/{repo}/pulls/{number}/files", s.repoAuth(s.pullFiles))
	mux.HandleFunc("GET /repos/{owner}/{repo}/tarball", s.repoAuth(s.tarballLink))
	mux.HandleFunc("GET /repos/{owner}/{repo}/tarball/{ref...}", s.repoAuth(s.tarballLink))
	mux.HandleFunc("POST /repos/{owner}/{repo}/deployments", s.repoAuth(s.createDeployment))
	mux.HandleFunc("GET /repos/{owner}/{repo}/deployments", s.repoAuth(s.listDeployments))
	mux.HandleFunc("GET /repos/{owner}/{repo}/deployments/{id}", s.repoAuth(s.getDeployment))
	mux.HandleFunc("POST /repos/{owner}/{repo}/deployments/{id}/statuses", s.repoAuth(s.createDeploymentStatus))
	mux.HandleFunc("GET /repos/{owner}/{repo}/deployments/{id}/statuses", s.repoAuth(s.listDeploymentStatuses))
	// User token.
	mux.HandleFunc("GET /user", s.userAuth(s.getUser))
	mux.HandleFunc("GET /user/installations", s.userAuth(s.userInstallations))
	mux.HandleFunc("GET /user/installations/{id}/repositories", s.userAuth(s.userInstallationRepos))
	// No authentication.
	mux.HandleFunc("POST /app-manifests/{code}/conversions", s.manifestConversion)
	// codeload.github.com.
	mux.HandleFunc("GET /_codeload/{owner}/{repo}/legacy.tar.gz/{sha}", s.codeload)
	// github.com.
	mux.HandleFunc("GET /login/oauth/authorize", s.oauthAuthorize)
	mux.HandleFunc("POST /login/oauth/access_token", s.oauthAccessToken)
	mux.HandleFunc("/settings/apps/new", s.newAppFromManifest)
	mux.HandleFunc("/organizations/{org}/settings/apps/new", s.newAppFromManifest)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not Found")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/api/v3/"); ok {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/" + rest
			r2.URL.RawPath = ""
			r = r2
		}
		w.Header().Set("X-GitHub-Request-Id", strings.ToUpper(randHex(8)))
		mux.ServeHTTP(w, r)
	})
}

// writeJSON answers with v as GitHub does: compact JSON, utf-8.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with GitHub's error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"message": msg, "documentation_url": docsURL})
}

// validationFailed answers 422 the way GitHub reports a bad field.
func validationFailed(w http.ResponseWriter, resource, field, msg string) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message": "Validation Failed",
		"errors": []map[string]any{{
			"resource": resource, "code": "custom", "field": field, "message": msg,
		}},
		"documentation_url": docsURL,
	})
}

// appJWT admits requests carrying a valid App JWT, checked as GitHub
// documents: RS256 signed by the App's key, iss the App ID (string or
// number) or client ID, iat and exp integers, iat not in the future (60 s
// of clock drift allowed), exp after now and at most 10 minutes after iat.
func (s *Server) appJWT(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if msg := s.checkJWT(r.Header.Get("Authorization")); msg != "" {
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		h(w, r)
	}
}

const jwtDecodeError = "A JSON web token could not be decoded"

func (s *Server) checkJWT(auth string) string {
	raw, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || raw == "" {
		return "Requires authentication"
	}
	p := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithJSONNumber(), jwt.WithoutClaimsValidation())
	claims := jwt.MapClaims{}
	if _, err := p.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) {
		return &s.key.PublicKey, nil
	}); err != nil {
		return jwtDecodeError
	}
	switch iss := claims["iss"].(type) {
	case json.Number:
		if iss.String() != strconv.FormatInt(s.AppID, 10) {
			return "Integration not found"
		}
	case string:
		if iss != strconv.FormatInt(s.AppID, 10) && iss != s.ClientID {
			return "Integration not found"
		}
	default:
		return "'Issuer' claim ('iss') must be an Integer"
	}
	iat, ok := intClaim(claims["iat"])
	if !ok {
		return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
	}
	exp, ok := intClaim(claims["exp"])
	if !ok {
		return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
	}
	now := time.Now().Unix()
	switch {
	case iat > now+60:
		return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
	case exp <= now:
		return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
	case exp-iat > 600:
		return "'Expiration time' claim ('exp') is too far in the future"
	}
	return ""
}

// intClaim accepts integer JSON numbers only; GitHub refuses fractions.
func intClaim(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}

// bearer extracts the token of "token X" or "Bearer X".
func bearer(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	for _, p := range []string{"token ", "Bearer ", "bearer "} {
		if t, ok := strings.CutPrefix(auth, p); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

// installationFor returns the installation an installation token acts as.
func (s *Server) installationForLocked(tok string) (int64, bool) {
	it, ok := s.instTokens[tok]
	if !ok || time.Now().After(it.expires) {
		return 0, false
	}
	if _, ok := s.installations[it.installation]; !ok {
		return 0, false
	}
	return it.installation, true
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	writeJSON(w, http.StatusOK, s.appJSONLocked())
}

func (s *Server) appJSONLocked() map[string]any {
	return map[string]any{
		"id": s.AppID, "slug": s.AppSlug, "node_id": "A_" + strconv.FormatInt(s.AppID, 10),
		"client_id": s.ClientID, "name": s.AppSlug,
		"owner":    map[string]any{"login": "velo-dev", "id": 1, "type": "User"},
		"html_url": s.WebURL() + "/apps/" + s.AppSlug,
		"permissions": map[string]string{
			"contents": "read", "deployments": "write", "metadata": "read", "pull_requests": "write",
		},
		"events":     []string{"push", "pull_request"},
		"created_at": "2024-05-16T12:00:00Z", "updated_at": "2024-05-16T12:00:00Z",
	}
}

func (s *Server) installationJSONLocked(in *installation) map[string]any {
	return map[string]any{
		"id":                   in.id,
		"account":              map[string]any{"login": in.account, "id": in.accountID, "type": in.accountType, "site_admin": false},
		"repository_selection": "selected",
		"access_tokens_url":    s.URL() + "app/installations/" + strconv.FormatInt(in.id, 10) + "/access_tokens",
		"repositories_url":     s.URL() + "installation/repositories",
		"html_url":             s.WebURL() + "/settings/installations/" + strconv.FormatInt(in.id, 10),
		"app_id":               s.AppID,
		"app_slug":             s.AppSlug,
		"target_id":            in.accountID,
		"target_type":          in.accountType,
		"permissions":          map[string]string{"contents": "read", "deployments": "write", "metadata": "read", "pull_requests": "write"},
		"events":               []string{"push", "pull_request"},
		"created_at":           in.created.Format(time.RFC3339),
		"updated_at":           in.created.Format(time.RFC3339),
		"single_file_name":     nil,
		"suspended_at":         nil,
		"suspended_by":         nil,
	}
}

func (s *Server) listInstallations(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := sortedIDs(s.installations)
	lo, hi := paginate(w, r, s.srv.URL, len(ids))
	out := []map[string]any{}
	for _, id := range ids[lo:hi] {
		out = append(out, s.installationJSONLocked(s.installations[id]))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getInstallation(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	in, ok := s.installations[id]
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, s.installationJSONLocked(in))
}

func (s *Server) createInstallationToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if _, ok := s.installations[id]; !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	tok, exp := s.issueInstTokenLocked(id)
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":                tok,
		"expires_at":           exp.Format(time.RFC3339),
		"permissions":          map[string]string{"contents": "read", "deployments": "write", "metadata": "read", "pull_requests": "write"},
		"repository_selection": "selected",
	})
}

// installationRepos serves GET /installation/repositories.
func (s *Server) installationRepos(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.installationForLocked(bearer(r))
	if !ok {
		writeError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	s.writeReposPageLocked(w, r, id)
}

func (s *Server) writeReposPageLocked(w http.ResponseWriter, r *http.Request, installationID int64) {
	repos := s.reposOfLocked(installationID)
	lo, hi := paginate(w, r, s.srv.URL, len(repos))
	out := []map[string]any{}
	for _, rp := range repos[lo:hi] {
		out = append(out, s.repoJSONLocked(rp))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"total_count": len(repos), "repository_selection": "selected", "repositories": out,
	})
}

// paginate applies GitHub's page and per_page (default 30, at most 100) to
// n items and sets the Link header go-github follows.
func paginate(w http.ResponseWriter, r *http.Request, base string, n int) (lo, hi int) {
	q := r.URL.Query()
	per, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || per <= 0 {
		per = 30
	}
	per = min(per, 100)
	page, err := strconv.Atoi(q.Get("page"))
	if err != nil || page <= 0 {
		page = 1
	}
	last := max((n+per-1)/per, 1)
	link := func(p int, rel string) string {
		u, _ := url.ParseRequestURI(r.RequestURI)
		v := u.Query()
		v.Set("per_page", strconv.Itoa(per))
		v.Set("page", strconv.Itoa(p))
		u.RawQuery = v.Encode()
		return fmt.Sprintf("<%s%s>; rel=%q", base, u.String(), rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(page-1, "prev"))
	}
	if page < last {
		links = append(links, link(page+1, "next"), link(last, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	lo = min((page-1)*per, n)
	hi = min(lo+per, n)
	return lo, hi
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func randAlnum(n int) string {
	const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b)
}

func randInt(n int64) int64 {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return int64(v % uint64(n))
}

// uuid returns a random RFC 4122 version 4 UUID, the form of GitHub's
// delivery IDs.
func uuid() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

var errNotLoopback = errors.New("githubtest: refusing to send to a non-loopback address")
