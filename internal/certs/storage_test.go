package certs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// engines runs fn against a fresh store of each engine.
func engines(t *testing.T, fn func(t *testing.T, url string)) {
	t.Run("SQLite", func(t *testing.T) {
		t.Parallel()
		fn(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	})
	t.Run("Postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, pgtest.URL(t))
	})
}

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func keyring(t *testing.T) *secrets.Keyring {
	t.Helper()
	k, err := secrets.Parse(secrets.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newStorage(t *testing.T, st *store.Store, keys *secrets.Keyring) *Storage {
	t.Helper()
	s, err := NewStorage(st, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestStorageContract checks the Storage interface as certmagic's doc
// states it: file and directory semantics, fs.ErrNotExist, sealing.
func TestStorageContract(t *testing.T) {
	engines(t, func(t *testing.T, url string) {
		ctx := context.Background()
		st := openStore(t, url)
		keys := keyring(t)
		s := newStorage(t, st, keys)
		if _, err := s.Load(ctx, "certs/x/x.crt"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
		}
		if _, err := s.Stat(ctx, "certs"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Stat of a missing key: %v", err)
		}
		if _, err := s.List(ctx, "certs", true); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("List of a missing directory: %v", err)
		}
		if s.Exists(ctx, "certs") {
			t.Fatal("Exists on an empty store")
		}
		secret := []byte("-----BEGIN EC PRIVATE KEY-----\nsecret\n-----END EC PRIVATE KEY-----\n")
		items := map[string][]byte{
			"certificates/acme/a.example/a.example.key":  secret,
			"certificates/acme/a.example/a.example.crt":  []byte("cert a"),
			"certificates/acme/a.example/a.example.json": []byte("{}"),
			"certificates/acme/b.example/b.example.crt":  []byte("cert b"),
			"certificates/acme-other/c.crt":              []byte("c"),
			"acme/ca/users/me/me.key":                    {0, 1, 0xff},
		}
		for k, v := range items {
			if err := s.Store(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
		for k, v := range items {
			got, err := s.Load(ctx, k)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("Load(%s) = %q, %v; want %q", k, got, err, v)
			}
		}
		// Sealed at rest: the store never holds the private key.
		raw, err := st.TLS(ctx, "certificates/acme/a.example/a.example.key")
		if err != nil || bytes.Contains(raw.Value, []byte("secret")) || raw.KeyID != keys.Primary() {
			t.Fatalf("stored row %+v, %v: want the value sealed under the primary key", raw, err)
		}
		// Sealed for its key: a row moved under another key does not open.
		if err := st.PutTLS(ctx, store.TLSItem{Key: "certificates/acme/moved.key", KeyID: raw.KeyID, Value: raw.Value, Size: raw.Size}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(ctx, "certificates/acme/moved.key"); err == nil {
			t.Fatal("a sealed value moved to another key opened")
		}
		if err := s.Delete(ctx, "certificates/acme/moved.key"); err != nil {
			t.Fatal(err)
		}
		// A value sealed under a key this process lacks is missing.
		other := newStorage(t, st, keyring(t))
		if _, err := other.Load(ctx, "certificates/acme/a.example/a.example.crt"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load under an unknown key: %v, want fs.ErrNotExist", err)
		}

		got, err := s.List(ctx, "certificates", false)
		if err != nil || !slices.Equal(got, []string{"certificates/acme", "certificates/acme-other"}) {
			t.Fatalf("List(certificates, false) = %v, %v", got, err)
		}
		got, _ = s.List(ctx, "certificates/acme", false)
		if !slices.Equal(got, []string{"certificates/acme/a.example", "certificates/acme/b.example"}) {
			t.Fatalf("List(certificates/acme, false) = %v", got)
		}
		got, _ = s.List(ctx, "certificates/acme", true)
		if !slices.Equal(got, []string{"certificates/acme/a.example/a.example.crt", "certificates/acme/a.example/a.example.json",
			"certificates/acme/a.example/a.example.key", "certificates/acme/b.example/b.example.crt"}) {
			t.Fatalf("List(certificates/acme, true) = %v", got)
		}
		if got, _ = s.List(ctx, "", false); !slices.Equal(got, []string{"acme", "certificates"}) {
			t.Fatalf("List(\"\", false) = %v", got)
		}
		fi, err := s.Stat(ctx, "certificates/acme/a.example/a.example.key")
		if err != nil || !fi.IsTerminal || fi.Size != int64(len(secret)) || fi.Modified.IsZero() || time.Since(fi.Modified) > time.Hour {
			t.Fatalf("Stat(file) = %+v, %v", fi, err)
		}
		if fi, err = s.Stat(ctx, "certificates/acme"); err != nil || fi.IsTerminal {
			t.Fatalf("Stat(directory) = %+v, %v", fi, err)
		}
		if !s.Exists(ctx, "certificates/acme") || !s.Exists(ctx, "acme/ca/users/me/me.key") || s.Exists(ctx, "certificates/ac") {
			t.Fatal("Exists: directory and file should exist, a partial component not")
		}
		if err := s.Delete(ctx, "certificates/acme"); err != nil {
			t.Fatal(err)
		}
		if s.Exists(ctx, "certificates/acme/b.example/b.example.crt") || !s.Exists(ctx, "certificates/acme-other/c.crt") {
			t.Fatal("Delete of a directory: wrong keys left")
		}
		if err := s.Delete(ctx, "certificates/acme"); err != nil {
			t.Fatalf("Delete of a missing key: %v, want nil", err)
		}
		if _, err := NewStorage(st, nil, nil); err == nil {
			t.Fatal("NewStorage without a keyring")
		}
	})
}

// TestStorageLocks: two routers (two Storages on one store) never hold one
// lock at once, a waiter gets it when it is released, and a lock whose
// holder died is taken over once stale.
func TestStorageLocks(t *testing.T) {
	engines(t, func(t *testing.T, url string) {
		ctx := context.Background()
		keys := keyring(t)
		a := newStorage(t, openStore(t, url), keys)
		b := newStorage(t, openStore(t, url), keys)
		if err := a.Lock(ctx, "issue_cert_x"); err != nil {
			t.Fatal(err)
		}
		if ok, err := b.TryLock(ctx, "issue_cert_x"); ok || err != nil {
			t.Fatalf("TryLock of a held lock = %v, %v", ok, err)
		}
		got := make(chan error, 1)
		go func() { got <- b.Lock(ctx, "issue_cert_x") }()
		select {
		case err := <-got:
			t.Fatalf("Lock returned while another held it: %v", err)
		case <-time.After(3 * lockPoll):
		}
		if err := a.Unlock(ctx, "issue_cert_x"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("Lock did not return within 60s of the release")
		}
		// Lock honours its context.
		cctx, cancel := context.WithTimeout(ctx, 2*lockPoll)
		defer cancel()
		if err := a.Lock(cctx, "issue_cert_x"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock with an expiring context: %v", err)
		}
		if err := b.Unlock(ctx, "issue_cert_x"); err != nil {
			t.Fatal(err)
		}
		if err := b.Unlock(ctx, "issue_cert_x"); err == nil {
			t.Fatal("Unlock of a lock not held")
		}

		// A holder that died: its lease is in the store, expired.
		st := openStore(t, url)
		if ok, err := st.LockTLS(ctx, "issue_cert_dead", "gone", time.Now().Add(-time.Second)); !ok || err != nil {
			t.Fatal(ok, err)
		}
		cctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := a.Lock(cctx, "issue_cert_dead"); err != nil {
			t.Fatalf("a stale lock was not taken over: %v", err)
		}
		_ = a.Unlock(ctx, "issue_cert_dead")
	})
}

// TestStorageLockHammer: goroutines of two routers take one lock over and
// over; never two inside at once.
func TestStorageLockHammer(t *testing.T) {
	engines(t, func(t *testing.T, url string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		keys := keyring(t)
		routers := []*Storage{newStorage(t, openStore(t, url), keys), newStorage(t, openStore(t, url), keys)}
		var inside, entered atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			s := routers[i%2]
			wg.Go(func() {
				for range 3 {
					if err := s.Lock(ctx, "hammer"); err != nil {
						errs <- err
						return
					}
					if n := inside.Add(1); n != 1 {
						errs <- errors.New("two holders at once")
					}
					entered.Add(1)
					inside.Add(-1)
					if err := s.Unlock(ctx, "hammer"); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if entered.Load() != 24 {
			t.Fatalf("entered %d times, want 24", entered.Load())
		}
	})
}
