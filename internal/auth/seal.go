package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/velo-run/velo/internal/github"
)

// sealPrefix marks a sealed token and the scheme that sealed it.
const sealPrefix = "v1."

// sealer encrypts the GitHub tokens of signed-in users at rest with
// AES-256-GCM, under a key derived (HKDF-SHA256) from the App's OAuth client
// secret: a copy of the database alone does not give the tokens away. A
// token sealed under another secret (the secret was rotated) does not open;
// its user signs in again, as after a revoked token.
type sealer struct {
	aead cipher.AEAD
}

// newSealer returns the sealer for app, or nil when app has no OAuth client
// (then no user signs in with GitHub and there is nothing to seal).
func newSealer(app *github.App) (*sealer, error) {
	if app == nil || app.Config().ClientSecret == "" {
		return nil, nil
	}
	key, err := hkdf.Key(sha256.New, []byte(app.Config().ClientSecret), nil, "velo: github user tokens", 32)
	if err != nil {
		return nil, fmt.Errorf("derive token key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// seal encrypts the token of login; the login is bound in, so a sealed
// token copied to another user's row does not open.
func (s *sealer) seal(login, token string) string {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	out := s.aead.Seal(nonce, nonce, []byte(token), []byte(login))
	return sealPrefix + base64.RawURLEncoding.EncodeToString(out)
}

var errNotSealed = errors.New("stored token is not sealed (stored before tokens were encrypted)")

// open decrypts what seal gave for login.
func (s *sealer) open(login, sealed string) (string, error) {
	rest, ok := strings.CutPrefix(sealed, sealPrefix)
	if !ok {
		return "", errNotSealed
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", errors.New("stored token is malformed")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, b[:n], b[n:], []byte(login))
	if err != nil {
		return "", errors.New("stored token does not open (was the OAuth client secret changed?)")
	}
	return string(plain), nil
}
