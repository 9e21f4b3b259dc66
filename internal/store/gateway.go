package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// APIKey is one API key of a private component, stored by the hash of its
// secret: the secret itself is shown once, when the key is made.
type APIKey struct {
	ID        string // names the key in lists and revocations
	Component string
	Label     string
	Hash      string // hex sha256 of the secret
	CreatedAt time.Time
}

// MaxAPIKeysPerComponent bounds how many API keys one component may hold.
const MaxAPIKeysPerComponent = 1000

const apiKeyCols = `id, component, label, hash, created_at`

// CreateAPIKey records an API key; CreatedAt defaults to now. ErrNotFound
// when the component does not exist, ErrConflict when the ID or hash is
// taken.
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey) error {
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now()
	}
	_, err := s.db.exec(ctx, `INSERT INTO api_keys (`+apiKeyCols+`) VALUES ($1, $2, $3, $4, $5)`,
		k.ID, k.Component, k.Label, k.Hash, micros(k.CreatedAt))
	if err != nil {
		return fmt.Errorf("create api key %s of %s: %w", k.ID, k.Component, err)
	}
	return nil
}

// APIKeys lists the API keys of component (every component's when
// component is ""), by component and creation.
func (s *Store) APIKeys(ctx context.Context, component string) ([]APIKey, error) {
	rs, err := s.db.query(ctx, `SELECT `+apiKeyCols+` FROM api_keys
		WHERE $1 = '' OR component = $1 ORDER BY component, created_at, id`, component)
	out, err := collect(rs, err, func(r row) (APIKey, error) {
		var k APIKey
		var created int64
		err := r.Scan(&k.ID, &k.Component, &k.Label, &k.Hash, &created)
		k.CreatedAt = fromMicros(created)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	return out, nil
}

// DeleteAPIKey revokes a component's API key; ErrNotFound if it has none
// with that ID.
func (s *Store) DeleteAPIKey(ctx context.Context, component, id string) error {
	n, err := s.db.exec(ctx, `DELETE FROM api_keys WHERE component = $1 AND id = $2`, component, id)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete api key %s of %s: %w", id, component, err)
	}
	return nil
}

// SetOpenAPI stores the OpenAPI document (JSON) of a deployment.
func (s *Store) SetOpenAPI(ctx context.Context, deployment int64, doc []byte) error {
	err := affected(s.db.exec(ctx, `UPDATE deployments SET openapi = $1 WHERE id = $2`, string(doc), deployment))
	if err != nil {
		return fmt.Errorf("set openapi of deployment %d: %w", deployment, err)
	}
	return nil
}

// OpenAPI returns the OpenAPI document of a deployment, nil when it has
// none; ErrNotFound when there is no such deployment.
func (s *Store) OpenAPI(ctx context.Context, deployment int64) ([]byte, error) {
	var doc string
	if err := s.db.queryRow(ctx, `SELECT openapi FROM deployments WHERE id = $1`, deployment).Scan(&doc); err != nil {
		return nil, fmt.Errorf("openapi of deployment %d: %w", deployment, err)
	}
	if doc == "" {
		return nil, nil
	}
	return []byte(doc), nil
}

// RateUsage is how many calls of one client of a component a router
// admitted in one batch.
type RateUsage struct {
	ID        int64
	Router    string
	Component string
	Client    string
	Used      int64
	At        time.Time
}

// AddRateUsage records a router's batch of admitted calls, in one
// statement.
func (s *Store) AddRateUsage(ctx context.Context, batch []RateUsage) error {
	if len(batch) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO rate_usage (router, component, client, used, at) VALUES `)
	args := make([]any, 0, 5*len(batch))
	for i, u := range batch {
		if i > 0 {
			b.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&b, "($%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5)
		at := u.At
		if at.IsZero() {
			at = now()
		}
		args = append(args, u.Router, u.Component, u.Client, u.Used, micros(at))
	}
	if _, err := s.db.exec(ctx, b.String(), args...); err != nil {
		return fmt.Errorf("add rate usage: %w", err)
	}
	return nil
}

// RateUsageSince returns the batches other routers than router recorded
// at or after since, oldest first, at most limit of them.
func (s *Store) RateUsageSince(ctx context.Context, router string, since time.Time, limit int) ([]RateUsage, error) {
	rs, err := s.db.query(ctx, `SELECT id, router, component, client, used, at FROM rate_usage
		WHERE router <> $1 AND at >= $2 ORDER BY id LIMIT $3`, router, micros(since), limit)
	out, err := collect(rs, err, func(r row) (RateUsage, error) {
		var u RateUsage
		var at int64
		err := r.Scan(&u.ID, &u.Router, &u.Component, &u.Client, &u.Used, &at)
		u.At = fromMicros(at)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("rate usage: %w", err)
	}
	return out, nil
}

// PruneRateUsage removes the batches recorded before before.
func (s *Store) PruneRateUsage(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.db.exec(ctx, `DELETE FROM rate_usage WHERE at < $1`, micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune rate usage: %w", err)
	}
	return n, nil
}
