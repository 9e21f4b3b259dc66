package deploymgr

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/store"
)

// Authenticator recognizes a caller by something other than a bearer
// token, such as the dashboard's session cookie. It returns the user and
// true when it does.
type Authenticator func(r *http.Request) (user string, ok bool)

// AddAuthenticator accepts callers that a recognizes, besides API tokens.
func (m *Manager) AddAuthenticator(a Authenticator) { m.auth = append(m.auth, a) }

// HashToken is how API tokens are stored: hex sha256 of the secret.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ctxUser is the echo context key of the authenticated user.
const ctxUser = "velo.user"

// requireAuth lets a request through only with a valid bearer token or a
// caller an Authenticator recognizes.
func (m *Manager) requireAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		user, err := m.authenticate(c.Request())
		if err != nil {
			var he *echo.HTTPError
			if errors.As(err, &he) && he.Code == http.StatusUnauthorized {
				c.Response().Header().Set("WWW-Authenticate", `Bearer realm="velo"`)
			}
			return err
		}
		c.Set(ctxUser, user)
		return next(c)
	}
}

// authenticate returns the user r's credential stands for: a bearer token,
// else what an Authenticator recognizes (the dashboard's session). It is
// asked again while a log stream runs, so a revoked token or an ended
// session stops it.
func (m *Manager) authenticate(r *http.Request) (string, error) {
	if secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && secret != "" {
		return m.tokenUser(r, strings.TrimSpace(secret))
	}
	for _, a := range m.auth {
		if user, ok := a(r); ok {
			return user, nil
		}
	}
	return "", echo.NewHTTPError(http.StatusUnauthorized, "missing API token: send Authorization: Bearer <token> (velo up writes one to .velo/admin.token)")
}

func (m *Manager) tokenUser(r *http.Request, secret string) (string, error) {
	if m.cfg.AdminToken != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(m.cfg.AdminToken)) == 1 {
		return "admin", nil
	}
	t, err := m.store.TokenByHash(r.Context(), HashToken(secret))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", echo.NewHTTPError(http.StatusUnauthorized, "invalid API token")
	case err != nil:
		return "", err
	}
	return t.User, nil
}
