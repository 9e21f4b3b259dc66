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
	n, err := s.db.exec(ctx, `DELETE FROM tokens WHERE hash = $1`, hash)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete token: %w", err)
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
