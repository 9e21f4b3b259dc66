package store

import (
	"context"
	"fmt"

	"github.com/velo-run/velo/migrations"
)

// Migrate applies the schema migrations the database has not seen yet, each
// in its own transaction, recording them in schema_migrations. It is safe to
// run again and from several processes at once (Postgres serializes them on
// an advisory lock). River's own schema (the event engine's queue) follows,
// through rivermigrate. Open calls it; `velo migrate` calls it alone.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrations.For(s.db.name())
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	err = s.db.migrationLock(ctx, func() error {
		if _, err := s.db.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		for _, m := range ms {
			if err := s.applyMigration(ctx, m); err != nil {
				return err
			}
		}
		return s.migrateRiver(ctx)
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// applyMigration runs m unless schema_migrations has it.
func (s *Store) applyMigration(ctx context.Context, m migrations.Migration) error {
	return s.tx(ctx, func(q querier) error {
		var n int64
		if err := q.queryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`,
			int64(m.Version)).Scan(&n); err != nil {
			return fmt.Errorf("check migration %04d: %w", m.Version, err)
		}
		if n > 0 {
			return nil
		}
		if _, err := q.exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("apply migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := q.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			int64(m.Version), m.Name, micros(now())); err != nil {
			return fmt.Errorf("record migration %04d: %w", m.Version, err)
		}
		return nil
	})
}

// SchemaVersion returns the highest migration version applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int64
	err := s.db.queryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return int(v), nil
}
