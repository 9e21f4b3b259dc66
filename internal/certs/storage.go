package certs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
)

// Store is what Storage needs of Velo's store.
type Store interface {
	PutTLS(ctx context.Context, it store.TLSItem) error
	TLS(ctx context.Context, key string) (store.TLSItem, error)
	DeleteTLS(ctx context.Context, key string) error
	TLSKeys(ctx context.Context, dir string) ([]string, error)
	LockTLS(ctx context.Context, name, owner string, until time.Time) (bool, error)
	RenewTLSLock(ctx context.Context, name, owner string, until time.Time) (bool, error)
	UnlockTLS(ctx context.Context, name, owner string) error
}

// Lock timing. A holder renews its lease every lockRenew; one not renewed
// for lockLease (a router that died mid-issuance) is stale and another may
// take it, as certmagic's file storage treats a lock file not touched for
// twice its refresh interval. A waiter polls every lockPoll.
const (
	lockLease = 20 * time.Second
	lockRenew = 5 * time.Second
	lockPoll  = 500 * time.Millisecond
)

// sealedAs is the "component" TLS items are sealed under (see
// secrets.Keyring.Seal): a value moved to a component secret does not open.
const sealedAs = "velo tls"

// Storage is a certmagic.Storage on Velo's store: Postgres for a cluster
// (every router shares it), SQLite for velo up. Values are sealed with the
// secrets keyring (private keys and the ACME account key are secrets).
// Safe for concurrent use.
type Storage struct {
	st   Store
	keys *secrets.Keyring
	log  *slog.Logger

	mu    sync.Mutex
	held  map[string]*lease // locks this process holds, by name
	owner string            // this process, in the lock owners' ids
}

// lease is a lock held, renewed until released.
type lease struct {
	owner string
	stop  chan struct{}
	done  chan struct{}
}

var (
	_ certmagic.Storage   = (*Storage)(nil)
	_ certmagic.TryLocker = (*Storage)(nil)
)

// NewStorage returns a Storage on st sealing with keys (required).
func NewStorage(st Store, keys *secrets.Keyring, log *slog.Logger) (*Storage, error) {
	if keys == nil {
		return nil, errors.New("tls storage: a secrets keyring is required to seal private keys (VELO_SECRETS_KEY)")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Storage{st: st, keys: keys, log: log, held: map[string]*lease{}, owner: randomID()}, nil
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Store puts value at key.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	id, sealed := s.keys.Seal(sealedAs, key, string(value))
	return s.st.PutTLS(ctx, store.TLSItem{Key: key, KeyID: id, Value: sealed, Size: int64(len(value))})
}

// Load returns the value at key; fs.ErrNotExist when there is none. An
// item sealed under a key this process lacks (a retired key) counts as
// missing: certificates and accounts can be obtained again.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	it, err := s.st.TLS(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fs.ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	if !s.keys.Has(it.KeyID) {
		s.log.Warn("tls storage: item sealed under a key this process lacks; treated as missing", "key", key, "key_id", it.KeyID)
		return nil, fs.ErrNotExist
	}
	v, err := s.keys.Open(sealedAs, key, it.KeyID, it.Value)
	if err != nil {
		return nil, fmt.Errorf("tls storage %s: %w", key, err)
	}
	return []byte(v), nil
}

// Delete removes key and, when it is a directory, everything below it.
func (s *Storage) Delete(ctx context.Context, key string) error {
	return s.st.DeleteTLS(ctx, key)
}

// Exists reports whether key is a file or a directory.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	if _, err := s.st.TLS(ctx, key); err == nil {
		return true
	}
	keys, err := s.st.TLSKeys(ctx, key)
	return err == nil && len(keys) > 0
}

// List returns the keys below dir: every file when recursive, otherwise
// the files and directories right below it. fs.ErrNotExist when there is
// nothing below dir.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = strings.Trim(dir, "/")
	keys, err := s.st.TLSKeys(ctx, dir)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fs.ErrNotExist
	}
	if recursive {
		return keys, nil
	}
	var out []string
	base := len(dir)
	if dir != "" {
		base++
	}
	for _, k := range keys {
		child := k
		if i := strings.IndexByte(k[base:], '/'); i >= 0 {
			child = k[:base+i]
		}
		out = append(out, child)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Stat describes key: a file with its size and time, or a directory.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	it, err := s.st.TLS(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: it.Modified, Size: it.Size, IsTerminal: true}, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return certmagic.KeyInfo{}, err
	}
	keys, err := s.st.TLSKeys(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if len(keys) == 0 {
		return certmagic.KeyInfo{}, fs.ErrNotExist
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// Lock takes the named lock, waiting (until ctx is done) while another
// router, or another goroutine of this one, holds it.
func (s *Storage) Lock(ctx context.Context, name string) error {
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// TryLock takes the named lock if it is free (or stale) and reports
// whether it did.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	owner := s.owner + "-" + randomID()
	ok, err := s.st.LockTLS(ctx, name, owner, time.Now().Add(lockLease))
	if err != nil || !ok {
		return false, err
	}
	l := &lease{owner: owner, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	s.held[name] = l
	s.mu.Unlock()
	go s.keep(name, l)
	return true, nil
}

// keep renews a lease until it is released. A lease lost (renewed too
// late, taken over) is logged: certmagic tolerates the rare overlap.
func (s *Storage) keep(name string, l *lease) {
	defer close(l.done)
	t := time.NewTicker(lockRenew)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), lockRenew)
		ok, err := s.st.RenewTLSLock(ctx, name, l.owner, time.Now().Add(lockLease))
		cancel()
		switch {
		case err != nil:
			s.log.Warn("tls storage: renew lock", "lock", name, "err", err)
		case !ok:
			s.log.Warn("tls storage: lock lost (it expired and another router took it)", "lock", name)
			return
		}
	}
}

// Unlock releases a lock this process holds.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("unlock %s: not held by this process", name)
	}
	close(l.stop)
	<-l.done
	return s.st.UnlockTLS(ctx, name, l.owner)
}

// Close releases every lock still held (at shutdown).
func (s *Storage) Close() {
	s.mu.Lock()
	names := make([]string, 0, len(s.held))
	for n := range s.held {
		names = append(names, n)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range names {
		_ = s.Unlock(ctx, n)
	}
}

// ResealStore is what Reseal needs of Velo's store.
type ResealStore interface {
	TLSNotSealedBy(ctx context.Context, keyID string, limit int) ([]store.TLSItem, error)
	ResealTLS(ctx context.Context, old store.TLSItem, keyID string, sealed []byte) (bool, error)
}

// resealBatch is how many items Reseal reads at a time.
const resealBatch = 200

// Reseal seals every TLS item again under the keyring's sealing key, for
// a rotation of the secrets key (velo secrets rotate-key): once the old
// key is retired, an item still sealed under it would no longer open, and
// every certificate and the ACME account would have to be obtained again.
// An item changed meanwhile (a renewal) is left as it is. It returns how many items it resealed
// and the keys of those that did not open (still under their old key).
func Reseal(ctx context.Context, st ResealStore, keys *secrets.Keyring) (int, []string, error) {
	primary := keys.Primary()
	resealed := 0
	var failed []string
	skip := map[string]bool{}
	for {
		batch, err := st.TLSNotSealedBy(ctx, primary, resealBatch+len(skip))
		if err != nil {
			return resealed, failed, err
		}
		progress := false
		for _, it := range batch {
			if skip[it.Key] {
				continue
			}
			v, err := keys.Open(sealedAs, it.Key, it.KeyID, it.Value)
			if err != nil {
				skip[it.Key] = true
				failed = append(failed, it.Key+": "+err.Error())
				continue
			}
			id, sealed := keys.Seal(sealedAs, it.Key, v)
			ok, err := st.ResealTLS(ctx, it, id, sealed)
			if err != nil {
				return resealed, failed, err
			}
			if ok {
				resealed++
				progress = true
			} else {
				// Written meanwhile: by a renewal, under the sealing
				// key, so it is not read again; else it stays as it
				// is, and its key is still in use (TLSKeyIDs).
				skip[it.Key] = true
			}
		}
		if !progress {
			return resealed, failed, nil
		}
	}
}

// String names the storage in certmagic's logs.
func (s *Storage) String() string { return "velo store" }
