package store

import (
	"context"
	"fmt"
)

// PutToken records an API token (by the hash of its secret), replacing
// one with the same hash. CreatedAt defaults to now.
func (s *Store) PutToken(ctx context.Context, t Token) error {
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now()
	}
	_, err := s.db.exec(ctx, `INSERT INTO tokens (hash, name, user_login, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (hash) DO UPDATE SET name = excluded.name, user_login = excluded.user_login,
			created_at = excluded.created_at`,
		t.Hash, t.Name, t.User, micros(t.CreatedAt))
	if err != nil {
		return fmt.Errorf("put token %s: %w", t.Name, err)
	}
	return nil
}

// TokenByHash returns the token whose secret hashes to hash, or
// ErrNotFound.
func (s *Store) TokenByHash(ctx context.Context, hash string) (Token, error) {
	var t Token
	var created int64
	err := s.db.queryRow(ctx, `SELECT hash, name, user_login, created_at FROM tokens WHERE hash = $1`, hash).
		Scan(&t.Hash, &t.Name, &t.User, &created)
	if err != nil {
		// The hash is a credential's fingerprint: keep it out of errors.
		return Token{}, fmt.Errorf("token: %w", err)
	}
	t.CreatedAt = fromMicros(created)
	return t, nil
}

// DeleteToken revokes a token; ErrNotFound if there is none.
func (s *Store) DeleteToken(ctx context.Context, hash string) error {
	err := affected(s.db.exec(ctx, `DELETE FROM tokens WHERE hash = $1`, hash))
	if err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	return nil
}

// TokenIDLen is the length of a token's ID: a prefix of its hash (64
// bits), enough to name it among a user's tokens, useless as a credential
// (the hash is of a 256-bit random secret).
const TokenIDLen = 16

// ID names the token in lists and revocations.
func (t Token) ID() string {
	if len(t.Hash) < TokenIDLen {
		return t.Hash
	}
	return t.Hash[:TokenIDLen]
}

// MaxTokensPerUser bounds how many API tokens one user may hold.
const MaxTokensPerUser = 100

// Tokens lists the API tokens of user (every user's when user is ""),
// oldest first.
func (s *Store) Tokens(ctx context.Context, user string) ([]Token, error) {
	rs, err := s.db.query(ctx, `SELECT hash, name, user_login, created_at FROM tokens
		WHERE $1 = '' OR user_login = $1 ORDER BY created_at, hash`, user)
	out, err := collect(rs, err, func(r row) (Token, error) {
		var t Token
		var created int64
		err := r.Scan(&t.Hash, &t.Name, &t.User, &created)
		t.CreatedAt = fromMicros(created)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	return out, nil
}

// DeleteTokenByID revokes the token whose ID is id and, unless user is "",
// that belongs to user; ErrNotFound if there is none.
func (s *Store) DeleteTokenByID(ctx context.Context, id, user string) error {
	if len(id) != TokenIDLen {
		return fmt.Errorf("delete token %s: %w", id, ErrNotFound)
	}
	n, err := s.db.exec(ctx, `DELETE FROM tokens WHERE substr(hash, 1, 16) = $1 AND ($2 = '' OR user_login = $2)`, id, user)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete token %s: %w", id, err)
	}
	return nil
}

// SetSetting stores a small named value, replacing the previous one.
func (s *Store) SetSetting(ctx context.Context, key, value string) error {
	_, err := s.db.exec(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("set setting %s: %w", key, err)
	}
	return nil
}

// Setting returns the value stored under key, or ErrNotFound.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	var v string
	if err := s.db.queryRow(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v); err != nil {
		return "", fmt.Errorf("setting %s: %w", key, err)
	}
	return v, nil
}
