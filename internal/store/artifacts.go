package store

import (
	"context"
	"fmt"
)

// PutArtifact stores data under its digest. Artifacts are content-addressed,
// so storing a digest again is a no-op.
func (s *Store) PutArtifact(ctx context.Context, digest string, data []byte) error {
	if data == nil {
		data = []byte{} // NULL is not an empty artifact
	}
	_, err := s.db.exec(ctx, `INSERT INTO artifacts (digest, data, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (digest) DO NOTHING`, digest, data, micros(now()))
	if err != nil {
		return fmt.Errorf("put artifact %s: %w", digest, err)
	}
	return nil
}

// Artifact returns the bytes stored under digest, or ErrNotFound.
func (s *Store) Artifact(ctx context.Context, digest string) ([]byte, error) {
	var data []byte
	if err := s.db.queryRow(ctx, `SELECT data FROM artifacts WHERE digest = $1`, digest).Scan(&data); err != nil {
		return nil, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// HasArtifact reports whether digest is stored.
func (s *Store) HasArtifact(ctx context.Context, digest string) (bool, error) {
	var n int64
	if err := s.db.queryRow(ctx, `SELECT count(*) FROM artifacts WHERE digest = $1`, digest).Scan(&n); err != nil {
		return false, fmt.Errorf("has artifact %s: %w", digest, err)
	}
	return n > 0, nil
}
