package githubtest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

type user struct {
	login         string
	id            int64
	token         string
	installations []int64
}

func (u *user) has(installationID int64) bool {
	return slices.Contains(u.installations, installationID)
}

type oauthCode struct {
	login       string
	redirectURI string
	expires     time.Time
	// challenge is the PKCE code_challenge (S256) the authorization
	// carried; the exchange must then send its code_verifier.
	challenge string
}

// AddUser creates a GitHub user with access to the given installations and
// returns a user access token for them (what the OAuth flow would yield).
// The first user added is the one signed in on the web (see SignIn).
func (s *Server) AddUser(login string, installations ...int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := &user{login: login, id: s.newIDLocked(), token: "ghu_" + randAlnum(36), installations: installations}
	s.users[u.token] = u
	if s.webUser == "" {
		s.webUser = login
	}
	return u.token
}

// SignIn makes login the user signed in on the web: the one
// /login/oauth/authorize authorizes.
func (s *Server) SignIn(login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.webUser = login
}

func (s *Server) userByLoginLocked(login string) *user {
	for _, u := range s.users {
		if u.login == login {
			return u
		}
	}
	return nil
}

type userHandler func(w http.ResponseWriter, r *http.Request, u *user)

// userAuth admits user access tokens; anything else is 401 as on GitHub.
func (s *Server) userAuth(h userHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		tok := bearer(r)
		u, ok := s.users[tok]
		if !ok {
			msg := "Bad credentials"
			if tok == "" {
				msg = "Requires authentication"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		h(w, r, u)
	}
}

func (s *Server) getUser(w http.ResponseWriter, _ *http.Request, u *user) {
	writeJSON(w, http.StatusOK, map[string]any{
		"login": u.login, "id": u.id, "node_id": "U_" + strconv.FormatInt(u.id, 10),
		"avatar_url": "https://avatars.githubusercontent.com/u/" + strconv.FormatInt(u.id, 10) + "?v=4",
		"url":        s.URL() + "users/" + u.login, "html_url": s.WebURL() + "/" + u.login,
		"type": "User", "site_admin": false, "name": u.login,
	})
}

func (s *Server) userInstallations(w http.ResponseWriter, r *http.Request, u *user) {
	var ids []int64
	for _, id := range sortedIDs(s.installations) {
		if u.has(id) {
			ids = append(ids, id)
		}
	}
	lo, hi := paginate(w, r, s.srv.URL, len(ids))
	out := []map[string]any{}
	for _, id := range ids[lo:hi] {
		out = append(out, s.installationJSONLocked(s.installations[id]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"total_count": len(ids), "installations": out})
}

func (s *Server) userInstallationRepos(w http.ResponseWriter, r *http.Request, u *user) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if _, ok := s.installations[id]; !ok || !u.has(id) {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	s.writeReposPageLocked(w, r, id)
}

// oauthAuthorize stands for the consent page: the signed-in user approves
// at once and is sent back to redirect_uri with code and state.
func (s *Server) oauthAuthorize(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := r.URL.Query()
	if q.Get("client_id") != s.ClientID {
		http.Error(w, "404: Not Found (unknown client_id)", http.StatusNotFound)
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || !redirect.IsAbs() {
		http.Error(w, "The redirect_uri MUST match the registered callback URL for this application.", http.StatusBadRequest)
		return
	}
	if s.userByLoginLocked(s.webUser) == nil {
		http.Error(w, "githubtest: nobody is signed in (AddUser or SignIn first)", http.StatusUnauthorized)
		return
	}
	// PKCE (RFC 7636): GitHub accepts only the S256 method, and does not
	// require PKCE; a code issued with a challenge is bound to it.
	challenge := q.Get("code_challenge")
	if m := q.Get("code_challenge_method"); (challenge != "" || m != "") && m != "S256" {
		http.Error(w, "code_challenge_method: only S256 is supported", http.StatusBadRequest)
		return
	}
	if challenge != "" && !validChallenge(challenge) {
		http.Error(w, "code_challenge: want the base64url SHA-256 of the code verifier (43 characters)", http.StatusBadRequest)
		return
	}
	code := randHex(10)
	s.oauthCodes[code] = oauthCode{login: s.webUser, redirectURI: redirect.String(), expires: time.Now().Add(10 * time.Minute), challenge: challenge}
	v := redirect.Query()
	v.Set("code", code)
	if st := q.Get("state"); st != "" {
		v.Set("state", st)
	}
	redirect.RawQuery = v.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// oauthAccessToken exchanges a code for the user's token. Like GitHub, it
// answers errors with 200 and an "error" field, and speaks JSON only when
// asked to (Accept: application/json); form encoding otherwise.
func (s *Server) oauthAccessToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, secret := r.Form.Get("client_id"), r.Form.Get("client_secret")
	if bid, bsecret, ok := r.BasicAuth(); ok {
		id, secret = bid, bsecret
	}
	reply := func(v url.Values) {
		if strings.Contains(r.Header.Get("Accept"), "application/json") {
			m := map[string]string{}
			for k := range v {
				m[k] = v.Get(k)
			}
			writeJSON(w, http.StatusOK, m)
			return
		}
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		_, _ = w.Write([]byte(v.Encode()))
	}
	fail := func(code, desc string) {
		reply(url.Values{"error": {code}, "error_description": {desc},
			"error_uri": {"https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#" + strings.ReplaceAll(code, "_", "-")}})
	}
	if id != s.ClientID || secret != s.ClientSecret {
		fail("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.")
		return
	}
	c, ok := s.oauthCodes[r.Form.Get("code")]
	if !ok || time.Now().After(c.expires) {
		fail("bad_verification_code", "The code passed is incorrect or expired.")
		return
	}
	if ru := r.Form.Get("redirect_uri"); ru != "" && ru != c.redirectURI {
		fail("redirect_uri_mismatch", "The redirect_uri MUST match the registered callback URL for this application.")
		return
	}
	if c.challenge != "" && !verifierMatches(r.Form.Get("code_verifier"), c.challenge) {
		// The code was bound to another client's verifier: redeeming it
		// without that verifier fails like a wrong code.
		fail("bad_verification_code", "The code passed is incorrect or expired.")
		return
	}
	delete(s.oauthCodes, r.Form.Get("code"))
	u := s.userByLoginLocked(c.login)
	reply(url.Values{"access_token": {u.token}, "token_type": {"bearer"}, "scope": {""}})
}

// validChallenge reports whether c looks like an S256 code challenge:
// 32 bytes, base64url without padding.
func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil && len(b) == sha256.Size
}

// verifierMatches checks a PKCE code_verifier (43 to 128 unreserved
// characters, RFC 7636 §4.1) against an S256 challenge.
func verifierMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	for _, c := range verifier {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("-._~", c)) {
			return false
		}
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// RevokeUser stands for a user revoking the App's authorization on
// GitHub: the user access token issued so far stops working (401 Bad
// credentials); signing in again yields a new one.
func (s *Server) RevokeUser(login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.userByLoginLocked(login)
	if u == nil {
		return
	}
	delete(s.users, u.token)
	u.token = "ghu_" + randAlnum(36)
	s.users[u.token] = u
}

// ManifestCode issues a manifest conversion code as if a user had just
// created the App from a default manifest.
func (s *Server) ManifestCode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := randHex(20)
	s.manifestCodes[code] = map[string]any{"name": s.AppSlug, "url": "http://127.0.0.1/"}
	return code
}

// Manifests returns the manifests posted to /settings/apps/new, in order.
func (s *Server) Manifests() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.manifests)
}

// newAppFromManifest stands for GitHub's "Create GitHub App" page fed with a
// form-posted manifest: the user accepts at once and is redirected to the
// manifest's redirect_url with ?code=…&state=….
func (s *Server) newAppFromManifest(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(r.Form.Get("manifest")), &m); err != nil {
		http.Error(w, "Invalid GitHub App configuration: manifest is not JSON", http.StatusUnprocessableEntity)
		return
	}
	hook, _ := m["hook_attributes"].(map[string]any)
	if u, _ := m["url"].(string); u == "" || hook == nil || hook["url"] == "" {
		http.Error(w, "Invalid GitHub App configuration: url and hook_attributes.url are required", http.StatusUnprocessableEntity)
		return
	}
	ru, _ := m["redirect_url"].(string)
	redirect, err := url.Parse(ru)
	if err != nil || !redirect.IsAbs() {
		http.Error(w, "Invalid GitHub App configuration: redirect_url", http.StatusUnprocessableEntity)
		return
	}
	s.manifests = append(s.manifests, m)
	code := randHex(20)
	s.manifestCodes[code] = m
	v := redirect.Query()
	v.Set("code", code)
	if st := r.URL.Query().Get("state"); st != "" {
		v.Set("state", st)
	}
	redirect.RawQuery = v.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// manifestConversion serves POST /app-manifests/{code}/conversions. Codes
// are single-use. The App "created" is this server's own App, so the
// returned credentials work against the stand-in at once.
func (s *Server) manifestConversion(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := r.PathValue("code")
	m, ok := s.manifestCodes[code]
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	delete(s.manifestCodes, code)
	out := s.appJSONLocked()
	if name, _ := m["name"].(string); name != "" {
		out["name"] = name
	}
	out["client_secret"] = s.ClientSecret
	out["webhook_secret"] = string(s.WebhookSecret)
	out["pem"] = string(s.PrivateKeyPEM)
	writeJSON(w, http.StatusCreated, out)
}
