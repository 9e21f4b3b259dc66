package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// EnvKey is the environment variable holding the keyring: one or more
// base64 keys of 32 bytes, comma separated, the first sealing new values.
const EnvKey = "VELO_SECRETS_KEY"

// KeyFile is the name of the key file `velo up` creates in its data dir
// when EnvKey is unset.
const KeyFile = "secrets.key"

// KeySize is the size of a key in bytes (AES-256).
const KeySize = 32

// sealVersion is the first byte of every sealed value: the format (one
// AES-256-GCM seal, nonce first). A later format gets another number.
const sealVersion = 1

// Keyring holds the keys secrets are sealed with. The first key seals; any
// key opens what it sealed, found by the key id stored beside each
// ciphertext, so that during a rotation old and new values both open. It is
// safe for concurrent use.
//
// A keyring read from VELO_SECRETS_KEY is fixed for the life of the
// process; one read from a key file Velo created can rotate by itself
// (AddKey, Retire), rewriting the file.
type Keyring struct {
	mu   sync.RWMutex
	keys []key // keys[0] seals
	file string
}

type key struct {
	id   string
	raw  []byte
	aead cipher.AEAD
}

// ErrFixedKeys is returned by AddKey and Retire on a keyring read from the
// environment: only the operator can change its keys.
var ErrFixedKeys = errors.New("the secrets keys come from " + EnvKey + ": change them there")

// Parse reads a keyring from its text form: base64 keys of KeySize bytes,
// comma separated, the first one sealing.
func Parse(text string) (*Keyring, error) {
	var keys []key
	for i, part := range strings.Split(text, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("key %d is empty: want base64 keys of %d bytes separated by commas (make one with `velo secrets new-key`)", i+1, KeySize)
		}
		raw, err := decodeKey(part)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		k, err := newKey(raw)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		if slices.ContainsFunc(keys, func(o key) bool { return o.id == k.id }) {
			return nil, fmt.Errorf("key %d: the same key (id %s) is listed twice", i+1, k.id)
		}
		keys = append(keys, k)
	}
	return &Keyring{keys: keys}, nil
}

// decodeKey accepts standard or URL base64, padded or not.
func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("decodes to %d bytes, want %d (make one with `velo secrets new-key`)", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("not base64: want %d random bytes in base64 (make one with `velo secrets new-key`)", KeySize)
}

func newKey(raw []byte) (key, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, err
	}
	return key{id: KeyID(raw), raw: slices.Clone(raw), aead: aead}, nil
}

// KeyID names a key without giving it away: 12 hex digits of a hash of it,
// stored with every value it seals.
func KeyID(raw []byte) string {
	sum := sha256.Sum256(append([]byte("velo secrets key id\x00"), raw...))
	return hex.EncodeToString(sum[:6])
}

// NewKey returns a fresh random key in the text form Parse reads.
func NewKey() string {
	raw := make([]byte, KeySize)
	_, _ = rand.Read(raw) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(raw)
}

// LoadFile reads the keyring in the key file at path, creating it (0600,
// one new key) when it does not exist. Such a keyring can rotate itself.
func LoadFile(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := writeFile(path, NewKey()); err != nil {
			return nil, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read secrets key file: %w", err)
	}
	k, err := Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("secrets key file %s: %w", path, err)
	}
	k.file = path
	return k, nil
}

// Load returns the keyring in env (the value of VELO_SECRETS_KEY) when it is
// set, else the one in dataDir's key file (created on first start), else,
// with dataDir empty, nil: this process cannot seal or open secrets.
func Load(env, dataDir string) (*Keyring, error) {
	if strings.TrimSpace(env) != "" {
		k, err := Parse(env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", EnvKey, err)
		}
		return k, nil
	}
	if dataDir == "" {
		return nil, nil
	}
	return LoadFile(filepath.Join(dataDir, KeyFile))
}

// writeFile replaces the key file atomically, 0600 from its creation.
func writeFile(path, text string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secrets-key-*")
	if err != nil {
		return fmt.Errorf("write secrets key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.WriteString(text + "\n")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write secrets key file: %w", err)
	}
	return nil
}

// Primary is the id of the key that seals.
func (k *Keyring) Primary() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[0].id
}

// IDs are the ids of every key, the sealing one first.
func (k *Keyring) IDs() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]string, len(k.keys))
	for i, key := range k.keys {
		out[i] = key.id
	}
	return out
}

// Has reports whether the keyring holds the key with id.
func (k *Keyring) Has(id string) bool {
	return slices.Contains(k.IDs(), id)
}

// Rotatable reports whether the keyring can add and retire keys itself
// (it lives in a key file Velo made), rather than through EnvKey.
func (k *Keyring) Rotatable() bool { return k.file != "" }

// aad binds a ciphertext to its component and name: a sealed value copied
// to another secret's row does not open.
func aad(component, name string) []byte {
	return []byte("velo secret\x00" + component + "\x00" + name)
}

// Seal encrypts value as the secret name of component with the sealing
// key, returning that key's id and the ciphertext.
func (k *Keyring) Seal(component, name, value string) (keyID string, sealed []byte) {
	k.mu.RLock()
	key := k.keys[0]
	k.mu.RUnlock()
	nonce := make([]byte, key.aead.NonceSize())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	out := make([]byte, 0, 1+len(nonce)+len(value)+key.aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, nonce...)
	out = key.aead.Seal(out, nonce, []byte(value), aad(component, name))
	return key.id, out
}

// Open decrypts what Seal returned for the same component and name.
func (k *Keyring) Open(component, name, keyID string, sealed []byte) (string, error) {
	k.mu.RLock()
	var found *key
	for i := range k.keys {
		if k.keys[i].id == keyID {
			found = &k.keys[i]
			break
		}
	}
	ids := make([]string, len(k.keys))
	for i, key := range k.keys {
		ids[i] = key.id
	}
	k.mu.RUnlock()
	if found == nil {
		return "", fmt.Errorf("secret %s is sealed under key %s, which this process does not have (it has %s): give it that key in %s",
			name, keyID, strings.Join(ids, ", "), EnvKey)
	}
	n := found.aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != sealVersion {
		return "", fmt.Errorf("secret %s: stored value is malformed", name)
	}
	plain, err := found.aead.Open(nil, sealed[1:1+n], sealed[1+n:], aad(component, name))
	if err != nil {
		return "", fmt.Errorf("secret %s: stored value does not open under key %s (altered, or moved from another secret)", name, keyID)
	}
	return string(plain), nil
}

// AddKey makes a new random key the sealing one, keeping the others to
// open older values, and writes the key file before using it. Only for a
// Rotatable keyring.
func (k *Keyring) AddKey() (string, error) {
	if !k.Rotatable() {
		return "", ErrFixedKeys
	}
	raw, _ := decodeKey(NewKey())
	nk, err := newKey(raw)
	if err != nil {
		return "", err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := append([]key{nk}, k.keys...)
	if err := writeFile(k.file, text(keys)); err != nil {
		return "", err
	}
	k.keys = keys
	return nk.id, nil
}

// Retire drops every key but the sealing one, from memory and the key
// file: call it once nothing is sealed under the others any more. Only for
// a Rotatable keyring.
func (k *Keyring) Retire() error {
	if !k.Rotatable() {
		return ErrFixedKeys
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := k.keys[:1:1]
	if err := writeFile(k.file, text(keys)); err != nil {
		return err
	}
	k.keys = keys
	return nil
}

// text is the key file form of keys.
func text(keys []key) string {
	parts := make([]string, len(keys))
	for i, key := range keys {
		parts[i] = base64.StdEncoding.EncodeToString(key.raw)
	}
	return strings.Join(parts, ",")
}
