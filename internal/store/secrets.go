package store

import (
	"context"
	"fmt"
	"time"
)

// Secret is one sealed secret of a component. The store only ever sees it
// sealed: Sealed is the ciphertext (internal/secrets seals and opens it),
// KeyID names the key that sealed it.
type Secret struct {
	Component string
	Name      string
	KeyID     string
	Sealed    []byte
	// Preview marks a secret that the component's previews (NAME--pr-N)
	// receive too; an unmarked one they never see.
	Preview   bool
	UpdatedAt time.Time
}

const secretCols = `component, name, key_id, sealed, updated_at, preview`

func scanSecret(r row) (Secret, error) {
	var s Secret
	var updated, preview int64
	err := r.Scan(&s.Component, &s.Name, &s.KeyID, &s.Sealed, &updated, &preview)
	s.UpdatedAt, s.Preview = fromMicros(updated), preview != 0
	return s, err
}

// PutSecret creates or replaces a secret of a component; UpdatedAt is set
// to now when zero. ErrNotFound when the component does not exist.
func (s *Store) PutSecret(ctx context.Context, sec Secret) error {
	if sec.UpdatedAt.IsZero() {
		sec.UpdatedAt = now()
	}
	preview := 0
	if sec.Preview {
		preview = 1
	}
	_, err := s.db.exec(ctx, `INSERT INTO secrets (`+secretCols+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (component, name) DO UPDATE
		SET key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at, preview = excluded.preview`,
		sec.Component, sec.Name, sec.KeyID, sec.Sealed, micros(sec.UpdatedAt), preview)
	if err != nil {
		return fmt.Errorf("put secret %s of %s: %w", sec.Name, sec.Component, err)
	}
	return nil
}

// DeleteSecret removes a secret; ErrNotFound when there is none.
func (s *Store) DeleteSecret(ctx context.Context, component, name string) error {
	n, err := s.db.exec(ctx, `DELETE FROM secrets WHERE component = $1 AND name = $2`, component, name)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete secret %s of %s: %w", name, component, err)
	}
	return nil
}

// Secrets returns the secrets of a component ordered by name (none for an
// unknown component).
func (s *Store) Secrets(ctx context.Context, component string) ([]Secret, error) {
	out, err := s.secrets(ctx, `SELECT `+secretCols+` FROM secrets WHERE component = $1 ORDER BY name`, component)
	if err != nil {
		return nil, fmt.Errorf("secrets of %s: %w", component, err)
	}
	return out, nil
}

// SecretsNotSealedBy returns every secret, of every component, whose KeyID
// is not keyID, ordered by component and name, at most limit of them: the
// rows a key rotation still has to re-seal.
func (s *Store) SecretsNotSealedBy(ctx context.Context, keyID string, limit int) ([]Secret, error) {
	out, err := s.secrets(ctx, `SELECT `+secretCols+` FROM secrets WHERE key_id <> $1
		ORDER BY component, name LIMIT $2`, keyID, limit)
	if err != nil {
		return nil, fmt.Errorf("secrets not sealed by %s: %w", keyID, err)
	}
	return out, nil
}

// SecretKeyIDs returns the distinct key ids the stored secrets are sealed
// under, sorted.
func (s *Store) SecretKeyIDs(ctx context.Context) ([]string, error) {
	rs, err := s.db.query(ctx, `SELECT DISTINCT key_id FROM secrets ORDER BY key_id`)
	out, err := collect(rs, err, scanString)
	if err != nil {
		return nil, fmt.Errorf("secret key ids: %w", err)
	}
	return out, nil
}

// ResealSecret replaces old's ciphertext with next's (same component and
// name; UpdatedAt is kept) only if the row still holds old's ciphertext,
// so a rotation never overwrites a value set meanwhile. It reports whether
// it replaced it.
func (s *Store) ResealSecret(ctx context.Context, old Secret, keyID string, sealed []byte) (bool, error) {
	n, err := s.db.exec(ctx, `UPDATE secrets SET key_id = $3, sealed = $4
		WHERE component = $1 AND name = $2 AND key_id = $5 AND sealed = $6`,
		old.Component, old.Name, keyID, sealed, old.KeyID, old.Sealed)
	if err != nil {
		return false, fmt.Errorf("reseal secret %s of %s: %w", old.Name, old.Component, err)
	}
	return n == 1, nil
}

func (s *Store) secrets(ctx context.Context, query string, args ...any) ([]Secret, error) {
	rs, err := s.db.query(ctx, query, args...)
	return collect(rs, err, scanSecret)
}
