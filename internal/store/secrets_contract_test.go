package store

import (
	"bytes"
	"context"
	"testing"
)

func testSecrets(t *testing.T, s *Store) {
	ctx := context.Background()
	wantErr(t, "PutSecret for a missing component",
		s.PutSecret(ctx, Secret{Component: "ghost", Name: "K", KeyID: "k1", Sealed: []byte{1}}), ErrNotFound)
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	if got, err := s.Secrets(ctx, "app"); err != nil || len(got) != 0 {
		t.Fatalf("Secrets of a component without any = %v, %v", got, err)
	}
	// Sealed bytes are binary: NUL and high bytes must round-trip.
	sealed := []byte{0, 0xff, 0x80, 'x', 0}
	must(t, s.PutSecret(ctx, Secret{Component: "app", Name: "TOKEN", KeyID: "k1", Sealed: sealed}))
	must(t, s.PutSecret(ctx, Secret{Component: "app", Name: "API_KEY", KeyID: "k1", Sealed: []byte("a")}))
	must(t, s.PutSecret(ctx, Secret{Component: "other", Name: "TOKEN", KeyID: "k2", Sealed: []byte("o")}))
	got, err := s.Secrets(ctx, "app")
	must(t, err)
	if len(got) != 2 || got[0].Name != "API_KEY" || got[1].Name != "TOKEN" || !bytes.Equal(got[1].Sealed, sealed) ||
		got[1].KeyID != "k1" || got[1].Component != "app" || got[1].UpdatedAt.IsZero() {
		t.Fatalf("Secrets(app) = %+v", got)
	}
	// Put replaces.
	must(t, s.PutSecret(ctx, Secret{Component: "app", Name: "TOKEN", KeyID: "k2", Sealed: []byte("new")}))
	got, _ = s.Secrets(ctx, "app")
	if len(got) != 2 || string(got[1].Sealed) != "new" || got[1].KeyID != "k2" || got[1].Preview {
		t.Fatalf("after replacing TOKEN: %+v", got)
	}
	// The preview mark is kept and replaced with the value.
	must(t, s.PutSecret(ctx, Secret{Component: "app", Name: "TOKEN", KeyID: "k2", Sealed: []byte("new"), Preview: true}))
	if got, _ = s.Secrets(ctx, "app"); !got[1].Preview || got[0].Preview {
		t.Fatalf("after marking TOKEN for previews: %+v", got)
	}
	ids, err := s.SecretKeyIDs(ctx)
	must(t, err)
	if len(ids) != 2 || ids[0] != "k1" || ids[1] != "k2" {
		t.Errorf("SecretKeyIDs = %v, want [k1 k2]", ids)
	}

	// Rotation's view: rows not sealed by k2, and a compare-and-swap reseal.
	todo, err := s.SecretsNotSealedBy(ctx, "k2", 100)
	must(t, err)
	if len(todo) != 1 || todo[0].Component != "app" || todo[0].Name != "API_KEY" {
		t.Fatalf("SecretsNotSealedBy(k2) = %+v", todo)
	}
	if lim, _ := s.SecretsNotSealedBy(ctx, "k9", 2); len(lim) != 2 {
		t.Errorf("SecretsNotSealedBy limit 2 returned %d", len(lim))
	}
	stale := todo[0]
	stale.Sealed = []byte("changed meanwhile")
	if ok, err := s.ResealSecret(ctx, stale, "k2", []byte("x")); err != nil || ok {
		t.Errorf("ResealSecret of a row that changed = %v, %v; want false", ok, err)
	}
	if ok, err := s.ResealSecret(ctx, todo[0], "k2", []byte("resealed")); err != nil || !ok {
		t.Fatalf("ResealSecret = %v, %v; want true", ok, err)
	}
	got, _ = s.Secrets(ctx, "app")
	if string(got[0].Sealed) != "resealed" || got[0].KeyID != "k2" || !got[0].UpdatedAt.Equal(todo[0].UpdatedAt) {
		t.Errorf("after reseal: %+v (UpdatedAt must stay %v)", got[0], todo[0].UpdatedAt)
	}
	if todo, _ := s.SecretsNotSealedBy(ctx, "k2", 100); len(todo) != 0 {
		t.Errorf("after reseal, not sealed by k2: %+v", todo)
	}

	wantErr(t, "DeleteSecret(missing)", s.DeleteSecret(ctx, "app", "NOPE"), ErrNotFound)
	must(t, s.DeleteSecret(ctx, "app", "TOKEN"))
	if got, _ := s.Secrets(ctx, "app"); len(got) != 1 || got[0].Name != "API_KEY" {
		t.Errorf("after delete: %+v", got)
	}
	// Deleting the component deletes its secrets.
	must(t, s.DeleteComponent(ctx, "app"))
	if got, _ := s.Secrets(ctx, "app"); len(got) != 0 {
		t.Errorf("secrets outlived their component: %+v", got)
	}
	if got, _ := s.Secrets(ctx, "other"); len(got) != 1 {
		t.Errorf("another component's secrets went too: %+v", got)
	}
}
