package certs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Session ticket keys shared by every router on one store, so that a
// client resumes its TLS session with any router of a cluster, not only
// the one that issued its ticket. The keys are one item of the TLS
// storage (sealed like the certificates, re-sealed by rotate-key): a new
// key every ticketRotate, each kept ticketKeep (a ticket opens as long as
// its key is kept), at most maxTicketKeys. Each router reads them every
// ticketRefresh; whoever finds the newest too old adds one under the
// storage's lock. A new key encrypts tickets only once it is older than
// ticketSettle, when every router has read it.
const (
	ticketKeysItem = "velo/session-ticket-keys"
	ticketLock     = "velo-session-ticket-keys"
	ticketRotate   = 24 * time.Hour
	ticketKeep     = 7 * 24 * time.Hour
	ticketRefresh  = time.Minute
	ticketSettle   = 3 * ticketRefresh
	maxTicketKeys  = 16
)

// ticketKey is one session ticket key as stored.
type ticketKey struct {
	Created time.Time `json:"created"`
	Key     []byte    `json:"key"` // 32 bytes
}

// Tickets encrypts and decrypts session tickets with the keys in the
// store (tls.Config's WrapSession and UnwrapSession: they carry over to
// every clone of the configuration, unlike SetSessionTicketKeys).
type Tickets struct {
	s   *Storage
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	keys    *tls.Config // holds the keys; EncryptTicket uses the first
	current time.Time   // when the key that encrypts was made

	stop chan struct{}
	done chan struct{}
}

// ShareTickets makes cfg's session tickets use the keys in s, read now
// (an error when the store cannot be read) and then every ticketRefresh
// until Stop.
func ShareTickets(ctx context.Context, cfg *tls.Config, s *Storage, log *slog.Logger) (*Tickets, error) {
	if log == nil {
		log = slog.Default()
	}
	t := &Tickets{s: s, log: log, now: time.Now, keys: &tls.Config{}, stop: make(chan struct{}), done: make(chan struct{})}
	if err := t.sync(ctx); err != nil {
		return nil, err
	}
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		return t.config().EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(id []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		return t.config().DecryptTicket(id, cs)
	}
	go t.run()
	return t, nil
}

func (t *Tickets) config() *tls.Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keys
}

// Stop ends the refreshes; tickets are still served with the keys held.
func (t *Tickets) Stop() {
	close(t.stop)
	<-t.done
}

func (t *Tickets) run() {
	defer close(t.done)
	tick := time.NewTicker(ticketRefresh)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := t.sync(ctx); err != nil {
			t.log.Warn("tls: session ticket keys not refreshed; the ones held go on", "err", err)
		}
		cancel()
	}
}

// sync reads the keys, adds one when the newest is due, and serves them.
func (t *Tickets) sync(ctx context.Context) error {
	keys, err := t.load(ctx)
	if err != nil {
		return err
	}
	if t.due(keys) {
		if keys, err = t.rotate(ctx); err != nil {
			return err
		}
	}
	now := t.now()
	// Encrypt with the newest key every router has had time to read.
	slices.SortFunc(keys, func(a, b ticketKey) int { return b.Created.Compare(a.Created) })
	first := 0
	for i, k := range keys {
		if now.Sub(k.Created) >= ticketSettle {
			first = i
			break
		}
	}
	list := [][32]byte{[32]byte(keys[first].Key)}
	for i, k := range keys {
		if i != first {
			list = append(list, [32]byte(k.Key))
		}
	}
	c := &tls.Config{}
	c.SetSessionTicketKeys(list)
	t.mu.Lock()
	t.keys, t.current = c, keys[first].Created
	t.mu.Unlock()
	return nil
}

func (t *Tickets) due(keys []ticketKey) bool {
	if len(keys) == 0 {
		return true
	}
	newest := slices.MaxFunc(keys, func(a, b ticketKey) int { return a.Created.Compare(b.Created) })
	return t.now().Sub(newest.Created) >= ticketRotate
}

// rotate adds a key under the lock, unless another router did meanwhile,
// and drops those past ticketKeep.
func (t *Tickets) rotate(ctx context.Context) ([]ticketKey, error) {
	if err := t.s.Lock(ctx, ticketLock); err != nil {
		return nil, err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = t.s.Unlock(uctx, ticketLock)
	}()
	keys, err := t.load(ctx)
	if err != nil || !t.due(keys) {
		return keys, err
	}
	k := ticketKey{Created: t.now().UTC(), Key: make([]byte, 32)}
	_, _ = rand.Read(k.Key)
	keys = append(keys, k)
	keys = slices.DeleteFunc(keys, func(x ticketKey) bool { return t.now().Sub(x.Created) > ticketKeep })
	if len(keys) > maxTicketKeys {
		slices.SortFunc(keys, func(a, b ticketKey) int { return b.Created.Compare(a.Created) })
		keys = keys[:maxTicketKeys]
	}
	b, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	if err := t.s.Store(ctx, ticketKeysItem, b); err != nil {
		return nil, fmt.Errorf("store session ticket keys: %w", err)
	}
	return keys, nil
}

// load reads the stored keys; none when there are none yet (or they were
// sealed under a key this process lacks). Keys of a wrong size are
// dropped.
func (t *Tickets) load(ctx context.Context) ([]ticketKey, error) {
	b, err := t.s.Load(ctx, ticketKeysItem)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load session ticket keys: %w", err)
	}
	var keys []ticketKey
	if err := json.Unmarshal(b, &keys); err != nil {
		t.log.Warn("tls: stored session ticket keys unreadable; new ones are made", "err", err)
		return nil, nil
	}
	return slices.DeleteFunc(keys, func(k ticketKey) bool { return len(k.Key) != 32 }), nil
}
