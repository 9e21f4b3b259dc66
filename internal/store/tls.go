package store

import (
	"context"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"
)

// TLSItem is one entry of the TLS storage certmagic keeps its
// certificates, private keys and ACME account in (see internal/certs).
// The store only holds it sealed: Value is the ciphertext, KeyID names the
// key that sealed it, Size is the plaintext's length.
type TLSItem struct {
	Key      string
	KeyID    string
	Value    []byte
	Size     int64
	Modified time.Time
}

// PutTLS creates or replaces an item; Modified is set to now when zero.
func (s *Store) PutTLS(ctx context.Context, it TLSItem) error {
	if it.Modified.IsZero() {
		it.Modified = now()
	}
	_, err := s.db.exec(ctx, `INSERT INTO tls_storage (key, key_id, value, size, modified) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (key) DO UPDATE SET key_id = excluded.key_id, value = excluded.value,
			size = excluded.size, modified = excluded.modified`,
		it.Key, it.KeyID, it.Value, it.Size, micros(it.Modified))
	if err != nil {
		return fmt.Errorf("put tls %s: %w", it.Key, err)
	}
	return nil
}

// TLS returns the item at key; ErrNotFound when there is none.
func (s *Store) TLS(ctx context.Context, key string) (TLSItem, error) {
	it := TLSItem{Key: key}
	var modified int64
	err := s.db.queryRow(ctx, `SELECT key_id, value, size, modified FROM tls_storage WHERE key = $1`, key).
		Scan(&it.KeyID, &it.Value, &it.Size, &modified)
	if err != nil {
		return TLSItem{}, fmt.Errorf("tls %s: %w", key, mapErr(err))
	}
	it.Modified = fromMicros(modified)
	return it, nil
}

// under is the condition "key is below dir" ($1 is dir + "/", $2 its
// length in characters), the same on both engines.
const under = `substr(key, 1, $2) = $1`

func dirArgs(dir string) (string, int) {
	d := dir + "/"
	return d, utf8.RuneCountInString(d)
}

// DeleteTLS removes the item at key and every item below key/ (a
// "directory"). Nothing to remove is no error.
func (s *Store) DeleteTLS(ctx context.Context, key string) error {
	d, n := dirArgs(key)
	if _, err := s.db.exec(ctx, `DELETE FROM tls_storage WHERE key = $3 OR `+under, d, n, key); err != nil {
		return fmt.Errorf("delete tls %s: %w", key, err)
	}
	return nil
}

// TLSKeys returns the keys of every item below dir/ (every item when dir
// is empty), in byte order (not the database's collation).
func (s *Store) TLSKeys(ctx context.Context, dir string) ([]string, error) {
	var (
		rs  rows
		err error
	)
	if dir == "" {
		rs, err = s.db.query(ctx, `SELECT key FROM tls_storage`)
	} else {
		d, n := dirArgs(dir)
		rs, err = s.db.query(ctx, `SELECT key FROM tls_storage WHERE `+under, d, n)
	}
	out, err := collect(rs, err, scanString)
	if err != nil {
		return nil, fmt.Errorf("tls keys %s: %w", dir, err)
	}
	slices.Sort(out)
	return out, nil
}

// LockTLS takes the lock name for owner until the given time, when it is
// free or its holder let it expire (a holder that died). It reports
// whether owner holds it now; it never waits.
func (s *Store) LockTLS(ctx context.Context, name, owner string, until time.Time) (bool, error) {
	n, err := s.db.exec(ctx, `INSERT INTO tls_locks (name, owner, expires) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
		WHERE tls_locks.expires < $4`, name, owner, micros(until), micros(now()))
	if err != nil {
		return false, fmt.Errorf("lock tls %s: %w", name, err)
	}
	return n == 1, nil
}

// RenewTLSLock moves the expiry of a lock owner holds; false when owner no
// longer holds it (it expired and another took it).
func (s *Store) RenewTLSLock(ctx context.Context, name, owner string, until time.Time) (bool, error) {
	n, err := s.db.exec(ctx, `UPDATE tls_locks SET expires = $3 WHERE name = $1 AND owner = $2`, name, owner, micros(until))
	if err != nil {
		return false, fmt.Errorf("renew tls lock %s: %w", name, err)
	}
	return n == 1, nil
}

// UnlockTLS releases a lock owner holds; releasing one it does not hold
// (any more) is no error.
func (s *Store) UnlockTLS(ctx context.Context, name, owner string) error {
	if _, err := s.db.exec(ctx, `DELETE FROM tls_locks WHERE name = $1 AND owner = $2`, name, owner); err != nil {
		return fmt.Errorf("unlock tls %s: %w", name, err)
	}
	return nil
}

// TLSNotSealedBy returns up to limit items sealed under another key than
// keyID, in key order (for a rotation to seal them again).
func (s *Store) TLSNotSealedBy(ctx context.Context, keyID string, limit int) ([]TLSItem, error) {
	rs, err := s.db.query(ctx, `SELECT key, key_id, value, size, modified FROM tls_storage WHERE key_id <> $1
		ORDER BY key LIMIT $2`, keyID, limit)
	out, err := collect(rs, err, func(r row) (TLSItem, error) {
		var it TLSItem
		var modified int64
		err := r.Scan(&it.Key, &it.KeyID, &it.Value, &it.Size, &modified)
		it.Modified = fromMicros(modified)
		return it, err
	})
	if err != nil {
		return nil, fmt.Errorf("tls items not sealed by %s: %w", keyID, err)
	}
	return out, nil
}

// TLSKeyIDs returns the distinct key ids the TLS items are sealed under,
// sorted.
func (s *Store) TLSKeyIDs(ctx context.Context) ([]string, error) {
	rs, err := s.db.query(ctx, `SELECT DISTINCT key_id FROM tls_storage ORDER BY key_id`)
	out, err := collect(rs, err, scanString)
	if err != nil {
		return nil, fmt.Errorf("tls key ids: %w", err)
	}
	return out, nil
}

// ResealTLS replaces old's ciphertext with sealed under keyID (Modified
// and Size kept: the value is the same) only if the item still holds
// old's ciphertext, so a rotation never overwrites a certificate renewed
// meanwhile. It reports whether it replaced it.
func (s *Store) ResealTLS(ctx context.Context, old TLSItem, keyID string, sealed []byte) (bool, error) {
	n, err := s.db.exec(ctx, `UPDATE tls_storage SET key_id = $2, value = $3 WHERE key = $1 AND key_id = $4 AND value = $5`,
		old.Key, keyID, sealed, old.KeyID, old.Value)
	if err != nil {
		return false, fmt.Errorf("reseal tls %s: %w", old.Key, err)
	}
	return n == 1, nil
}
