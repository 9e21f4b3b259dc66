package secrets

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustParse(t *testing.T, text string) *Keyring {
	t.Helper()
	k, err := Parse(text)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := mustParse(t, NewKey())
	id, sealed := k.Seal("app", "TOKEN", "hunter2-value")
	if id != k.Primary() || len(id) != 12 {
		t.Errorf("key id %q, want the primary %q (12 hex digits)", id, k.Primary())
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("sealed value holds the plaintext")
	}
	if got, err := k.Open("app", "TOKEN", id, sealed); err != nil || got != "hunter2-value" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Sealing twice gives different ciphertexts (fresh nonces).
	if _, again := k.Seal("app", "TOKEN", "hunter2-value"); bytes.Equal(again, sealed) {
		t.Error("two seals of one value are equal: nonce reused")
	}
	// Bound to component and name: a row copied elsewhere does not open.
	for _, c := range [][2]string{{"other", "TOKEN"}, {"app", "OTHER"}, {"ap", "pTOKEN"}} {
		if _, err := k.Open(c[0], c[1], id, sealed); err == nil {
			t.Errorf("value sealed for app/TOKEN opened as %s/%s", c[0], c[1])
		}
	}
	// Tampering is detected.
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := k.Open("app", "TOKEN", id, bad); err == nil {
		t.Error("altered ciphertext opened")
	}
	for _, b := range [][]byte{nil, {1}, {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := k.Open("app", "TOKEN", id, b); err == nil {
			t.Errorf("Open(%x) succeeded", b)
		}
	}
	// Another key's id: the error names both, never the value.
	other := mustParse(t, NewKey())
	_, err := other.Open("app", "TOKEN", id, sealed)
	if err == nil || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), other.Primary()) ||
		!strings.Contains(err.Error(), EnvKey) || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Open with the wrong keyring: %v", err)
	}
}

func TestKeyringRotationOrder(t *testing.T) {
	oldKey, newKey := NewKey(), NewKey()
	old := mustParse(t, oldKey)
	id, sealed := old.Seal("app", "K", "value-1")
	both := mustParse(t, newKey+", "+oldKey)
	if both.Primary() == id || len(both.IDs()) != 2 || both.IDs()[1] != id {
		t.Fatalf("keyring new,old: ids %v, old id %s", both.IDs(), id)
	}
	if v, err := both.Open("app", "K", id, sealed); err != nil || v != "value-1" {
		t.Errorf("new,old opens an old value: %q, %v", v, err)
	}
	if nid, _ := both.Seal("app", "K", "v"); nid != both.Primary() {
		t.Errorf("new,old seals under %s, want the first key %s", nid, both.Primary())
	}
}

func TestParseErrors(t *testing.T) {
	k := NewKey()
	for _, bad := range []string{"", "not base64!", "c2hvcnQ=", k + ",", k + "," + k} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
	if _, err := Parse(strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(k), "=")); err != nil {
		t.Errorf("URL base64 without padding: %v", err)
	}
	if _, err := Load("garbage", ""); err == nil || !strings.Contains(err.Error(), EnvKey) {
		t.Errorf("Load(garbage) = %v, want an error naming %s", err, EnvKey)
	}
	if k, err := Load("", ""); k != nil || err != nil {
		t.Errorf("Load without key or data dir = %v, %v; want nil, nil", k, err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, err := Load("", dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if !k.Rotatable() {
		t.Error("a key file keyring is not rotatable")
	}
	id, sealed := k.Seal("app", "K", "v1-secret")
	again, err := Load("", dir)
	if err != nil || again.Primary() != id {
		t.Fatalf("second start: %v, primary %s want %s (the file must be reused)", err, again.Primary(), id)
	}

	// Rotation: a new sealing key, the old one still opens until retired.
	nid, err := k.AddKey()
	if err != nil || nid == id || k.Primary() != nid {
		t.Fatalf("AddKey = %s, %v; primary %s", nid, err, k.Primary())
	}
	reread, _ := Load("", dir)
	if ids := reread.IDs(); len(ids) != 2 || ids[0] != nid || ids[1] != id {
		t.Errorf("key file after AddKey holds %v, want [%s %s]", ids, nid, id)
	}
	if v, err := reread.Open("app", "K", id, sealed); err != nil || v != "v1-secret" {
		t.Errorf("old value after AddKey: %q, %v", v, err)
	}
	if err := k.Retire(); err != nil {
		t.Fatal(err)
	}
	reread, _ = Load("", dir)
	if ids := reread.IDs(); len(ids) != 1 || ids[0] != nid {
		t.Errorf("key file after Retire holds %v, want [%s]", ids, nid)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten key file mode %v", fi.Mode().Perm())
	}

	env := mustParse(t, NewKey())
	if _, err := env.AddKey(); err != ErrFixedKeys {
		t.Errorf("AddKey on an environment keyring: %v", err)
	}
	if err := env.Retire(); err != ErrFixedKeys {
		t.Errorf("Retire on an environment keyring: %v", err)
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"API_KEY", "_x", "a1", strings.Repeat("A", MaxName)} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1A", "A-B", "A B", "A=B", "Ä", strings.Repeat("A", MaxName+1),
		"PATH_INFO", "REQUEST_METHOD", "HTTP_HOST", "HTTP_X_ANY", "PORT"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) succeeded", bad)
		}
	}
	if err := ValidValue("K", strings.Repeat("x", MaxValue)); err != nil {
		t.Errorf("a value of MaxValue bytes: %v", err)
	}
	for _, bad := range []string{strings.Repeat("x", MaxValue+1), "a\x00b", "\xff"} {
		if err := ValidValue("K", bad); err == nil || strings.Contains(err.Error(), bad) {
			t.Errorf("ValidValue(%.10q) = %v (must fail without echoing the value)", bad, err)
		}
	}
}

func TestRedactor(t *testing.T) {
	if NewRedactor(nil) != nil || NewRedactor(map[string]string{"A": "abc"}) != nil {
		t.Error("a redactor with nothing long enough to redact is not nil")
	}
	var none *Redactor
	if none.Line("x") != "x" {
		t.Error("nil redactor changed a line")
	}
	r := NewRedactor(map[string]string{
		"TOKEN":  "s3cr3t-token",
		"SHORT":  "s3cr", // inside TOKEN's value: TOKEN must win where both match
		"PEM":    "-----BEGIN KEY-----\nAAAABBBBCCCC\r\n-----END KEY-----\n",
		"TINY":   "ab",
		"EMPTY":  "",
		"REPEAT": "s3cr3t-token", // same value, two names: either name will do
	})
	cases := []struct{ in, want string }{
		{"nothing here", "nothing here"},
		{"token=s3cr3t-token!", "token=[secret REPEAT]!"},
		{"s3cr and s3cr3t-token", "[secret SHORT] and [secret REPEAT]"},
		{"key line AAAABBBBCCCC end", "key line [secret PEM] end"},
		{"ab stays", "ab stays"},
	}
	for _, c := range cases {
		got := r.Line(c.in)
		// Two names for one value: accept either.
		got = strings.ReplaceAll(got, "[secret TOKEN]", "[secret REPEAT]")
		if got != c.want {
			t.Errorf("Line(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzOpen feeds Open what a tampered store might hold: it must fail
// cleanly, never panic, and never open.
func FuzzOpen(f *testing.F) {
	k, _ := Parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	_, sealed := k.Seal("app", "K", "value")
	f.Add(sealed)
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := k.Open("app", "K", k.Primary(), b)
		if err == nil && v != "value" {
			// Only a genuine seal opens (GCM forgery is not a fuzz find).
			t.Fatalf("opened %x as %q", b, v)
		}
	})
}
