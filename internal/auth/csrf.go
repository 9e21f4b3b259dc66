package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
)

// CSRF protection for cookie-authenticated requests. Every state-changing
// request that a session cookie authenticates must also carry the session's
// anti-forgery token: in the CSRFHeader header (fetch, the REST API) or in
// the CSRFField form field (the dashboard's forms). The token is derived
// from the session secret, which lives only in the HttpOnly cookie, so a
// page on another origin — or a component served on a sibling host, which
// SameSite=Lax does not stop — cannot know it. Requests authenticated by a
// bearer token need none: a browser never sends one on its own.
const (
	CSRFHeader = "X-CSRF-Token"
	CSRFField  = "csrf"
)

// CSRFTokenOf returns the anti-forgery token of the session whose cookie
// holds secret.
func CSRFTokenOf(secret string) string {
	sum := sha256.Sum256([]byte("velo csrf\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// CSRFToken returns the anti-forgery token of the request's session cookie,
// or "" when it has none.
func (s *Sessions) CSRFToken(r *http.Request) string {
	secret := s.sessionSecret(r)
	if secret == "" {
		return ""
	}
	return CSRFTokenOf(secret)
}

// ValidCSRF reports whether token is the anti-forgery token of the
// request's session.
func (s *Sessions) ValidCSRF(r *http.Request, token string) bool {
	want := s.CSRFToken(r)
	return want != "" && token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(want)) == 1
}

// safeMethod reports whether method only reads.
func safeMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// GitHubSignIn reports whether users can sign in with GitHub.
func (s *Sessions) GitHubSignIn() bool { return s.oauthEnabled() }

// AdminSignIn reports whether the admin token signs in (at LoginPath).
func (s *Sessions) AdminSignIn() bool { return s.cfg.AdminToken != "" }

// adminLoginForm serves POST /login: the admin token pasted into the
// dashboard's sign-in form. A wrong token goes back to the sign-in page
// with ?signin=failed.
func (s *Sessions) adminLoginForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	tok := r.PostFormValue("token")
	if s.cfg.AdminToken == "" || tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.AdminToken)) != 1 {
		s.log.Warn("admin sign-in refused: wrong token")
		http.Redirect(w, r, "/?signin=failed", http.StatusSeeOther)
		return
	}
	if err := s.startSession(w, r, AdminUser); err != nil {
		s.log.Error("create admin session failed", "err", err)
		http.Error(w, "could not create a session", http.StatusInternalServerError)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
