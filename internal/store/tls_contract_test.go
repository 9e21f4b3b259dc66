package store

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func testTLS(t *testing.T, s *Store) {
	ctx := context.Background()
	if _, err := s.TLS(ctx, "certs/a/a.crt"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TLS of a missing key: %v, want ErrNotFound", err)
	}
	val := []byte{0, 0xff, 'x'}
	for _, k := range []string{"certs/ca/a.example/a.example.crt", "certs/ca/a.example/a.example.key",
		"certs/ca/b.example/b.example.crt", "certs/ca_other/x.crt", "certsx/y", "acme/u.key"} {
		must(t, s.PutTLS(ctx, TLSItem{Key: k, KeyID: "k1", Value: val, Size: 3}))
	}
	it, err := s.TLS(ctx, "certs/ca/a.example/a.example.key")
	must(t, err)
	if !bytes.Equal(it.Value, val) || it.KeyID != "k1" || it.Size != 3 || it.Modified.IsZero() {
		t.Fatalf("TLS = %+v", it)
	}
	must(t, s.PutTLS(ctx, TLSItem{Key: "certs/ca/a.example/a.example.key", KeyID: "k2", Value: []byte("new"), Size: 9}))
	if it, _ = s.TLS(ctx, "certs/ca/a.example/a.example.key"); string(it.Value) != "new" || it.KeyID != "k2" || it.Size != 9 {
		t.Fatalf("after replacing: %+v", it)
	}
	keys, err := s.TLSKeys(ctx, "certs/ca")
	must(t, err)
	want := []string{"certs/ca/a.example/a.example.crt", "certs/ca/a.example/a.example.key", "certs/ca/b.example/b.example.crt"}
	if !slices.Equal(keys, want) {
		t.Fatalf("TLSKeys(certs/ca) = %v, want %v (not certs/ca_other, a sibling)", keys, want)
	}
	if all, _ := s.TLSKeys(ctx, ""); len(all) != 6 {
		t.Fatalf("TLSKeys(\"\") = %v", all)
	}
	must(t, s.DeleteTLS(ctx, "certs/ca/a.example"))
	if keys, _ = s.TLSKeys(ctx, "certs"); !slices.Equal(keys, []string{"certs/ca/b.example/b.example.crt", "certs/ca_other/x.crt"}) {
		t.Fatalf("after deleting a directory: %v", keys)
	}
	// A rotation's reads and conditional writes.
	ids, err := s.TLSKeyIDs(ctx)
	must(t, err)
	if !slices.Equal(ids, []string{"k1"}) {
		t.Fatalf("TLSKeyIDs = %v, want [k1]", ids)
	}
	old, err := s.TLSNotSealedBy(ctx, "k2", 2)
	must(t, err)
	if len(old) != 2 || old[0].Key != "acme/u.key" || old[1].Key != "certs/ca/b.example/b.example.crt" || old[0].KeyID != "k1" || !bytes.Equal(old[0].Value, val) {
		t.Fatalf("TLSNotSealedBy(k2, 2) = %+v", old)
	}
	ok, err := s.ResealTLS(ctx, old[0], "k2", []byte("resealed"))
	must(t, err)
	if it, _ := s.TLS(ctx, "acme/u.key"); !ok || it.KeyID != "k2" || string(it.Value) != "resealed" || it.Size != 3 {
		t.Fatalf("after ResealTLS: %v %+v", ok, it)
	}
	if ok, _ := s.ResealTLS(ctx, old[0], "k3", []byte("stale")); ok {
		t.Fatal("ResealTLS replaced an item that changed since it was read")
	}
	if ids, _ = s.TLSKeyIDs(ctx); !slices.Equal(ids, []string{"k1", "k2"}) {
		t.Fatalf("TLSKeyIDs after a reseal = %v", ids)
	}
	must(t, s.DeleteTLS(ctx, "acme/u.key"))
	must(t, s.DeleteTLS(ctx, "acme/u.key")) // gone already: no error
	if _, err := s.TLS(ctx, "acme/u.key"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
}

func testTLSLocks(t *testing.T, s *Store) {
	ctx := context.Background()
	soon := time.Now().Add(time.Minute)
	ok, err := s.LockTLS(ctx, "issue_cert_a", "one", soon)
	must(t, err)
	if !ok {
		t.Fatal("a free lock was not taken")
	}
	if ok, _ := s.LockTLS(ctx, "issue_cert_a", "two", soon); ok {
		t.Fatal("a held lock was taken by another owner")
	}
	if ok, _ := s.LockTLS(ctx, "issue_cert_a", "one", soon); ok {
		t.Fatal("a held lock was taken again by its owner: Lock must not be reentrant")
	}
	if ok, _ := s.LockTLS(ctx, "issue_cert_b", "two", soon); !ok {
		t.Fatal("another name's lock was not taken")
	}
	if ok, _ := s.RenewTLSLock(ctx, "issue_cert_a", "two", soon); ok {
		t.Fatal("a lock was renewed by one who does not hold it")
	}
	// Unlock by another owner does nothing.
	must(t, s.UnlockTLS(ctx, "issue_cert_a", "two"))
	if ok, _ := s.LockTLS(ctx, "issue_cert_a", "two", soon); ok {
		t.Fatal("unlock by another owner released the lock")
	}
	must(t, s.UnlockTLS(ctx, "issue_cert_a", "one"))
	if ok, _ := s.LockTLS(ctx, "issue_cert_a", "two", soon); !ok {
		t.Fatal("a released lock was not taken")
	}
	// A lease its holder let expire is stale: another takes it, and the
	// old holder can no longer renew it.
	if ok, _ := s.LockTLS(ctx, "stale", "dead", time.Now().Add(-time.Second)); !ok {
		t.Fatal("take stale")
	}
	if ok, _ := s.LockTLS(ctx, "stale", "alive", soon); !ok {
		t.Fatal("an expired lock was not taken over")
	}
	if ok, _ := s.RenewTLSLock(ctx, "stale", "dead", soon); ok {
		t.Fatal("the old holder renewed a lock taken over")
	}
	if ok, _ := s.RenewTLSLock(ctx, "stale", "alive", soon); !ok {
		t.Fatal("the holder could not renew its lock")
	}
}

func testDomains(t *testing.T, s *Store) {
	ctx := context.Background()
	wantErr(t, "ClaimDomains of a missing component", s.ClaimDomains(ctx, "ghost", []string{"g.example"}, nil), ErrNotFound)
	mkComponent(t, s, "api")
	mkComponent(t, s, "web")
	must(t, s.ClaimDomains(ctx, "api", []string{"api.example.com", "v1.example.com"}, nil))
	must(t, s.ClaimDomains(ctx, "api", []string{"api.example.com", "v1.example.com"}, nil)) // again: no change
	err := s.ClaimDomains(ctx, "web", []string{"www.example.com", "api.example.com"}, nil)
	var taken *DomainTakenError
	if !errors.As(err, &taken) || taken.Domain != "api.example.com" || taken.Holder != "api" {
		t.Fatalf("claiming another's domain: %v, want DomainTakenError naming api", err)
	}
	if d, _ := s.Domains(ctx, "web"); len(d) != 0 {
		t.Fatalf("a refused claim left %v", d)
	}
	// A new claim releases what neither it nor keep lists.
	must(t, s.ClaimDomains(ctx, "api", []string{"api.example.com"}, []string{"old.example.com"}))
	if d, _ := s.Domains(ctx, "api"); !slices.Equal(d, []string{"api.example.com"}) {
		t.Fatalf("Domains(api) = %v", d)
	}
	must(t, s.ClaimDomains(ctx, "web", []string{"v1.example.com"}, nil))
	routes, err := s.Routes(ctx)
	must(t, err)
	for _, r := range routes {
		want := map[string][]string{"api": {"api.example.com"}, "web": {"v1.example.com"}}[r.Component]
		if !slices.Equal(r.Domains, want) {
			t.Errorf("route %s: Domains %v, want %v", r.Component, r.Domains, want)
		}
	}
	must(t, s.DeleteComponent(ctx, "api"))
	must(t, s.ClaimDomains(ctx, "web", []string{"api.example.com"}, []string{"v1.example.com"}))
}
