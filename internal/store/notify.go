package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Notification channels the roles use.
const (
	ChannelRoutes      = "routes"
	ChannelPlacements  = "placements"
	ChannelDeployments = "deployments"
	ChannelLogs        = "logs"
	// ChannelSecrets carries the name of a component whose secrets
	// changed; workers restart its instances with them.
	ChannelSecrets = "secrets"
)

// listenBuffer is how many payloads a slow listener may fall behind before
// the hub starts dropping its oldest ones.
const listenBuffer = 64

// Notify sends payload to every Listen on channel, in this process and, on
// Postgres, in every other process using the database (pg_notify; payloads
// must stay under 8000 bytes there). An empty payload means "resync".
func (s *Store) Notify(ctx context.Context, channel, payload string) error {
	if err := s.db.notify(ctx, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// Listen delivers the payloads sent on channel from now on, until ctx is
// done or the Store closes; then the channel is closed.
//
// An empty payload means "you may have missed something, resync": it is
// sent after the Postgres connection carrying notifications came back from
// a drop, and when the listener fell more than a small buffer behind (the
// hub then drops the oldest payloads rather than block everyone else).
func (s *Store) Listen(ctx context.Context, channel string) (<-chan string, error) {
	if channel == "" {
		return nil, errors.New("listen: empty channel name")
	}
	sub := s.hub.subscribe(channel)
	if err := s.db.listen(ctx, channel); err != nil {
		s.hub.unsubscribe(sub)
		return nil, fmt.Errorf("listen %s: %w", channel, err)
	}
	go func() {
		select {
		case <-ctx.Done():
			s.hub.unsubscribe(sub)
		case <-sub.gone:
		}
	}()
	return sub.ch, nil
}

// hub fans payloads out to the subscribers of each channel in the process.
type hub struct {
	mu     sync.Mutex
	subs   map[string]map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	channel string
	ch      chan string
	gone    chan struct{} // closed with ch, when unsubscribed
}

func newHub() *hub {
	return &hub{subs: make(map[string]map[*subscriber]struct{})}
}

func (h *hub) subscribe(channel string) *subscriber {
	sub := &subscriber{channel: channel, ch: make(chan string, listenBuffer), gone: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(sub.ch)
		close(sub.gone)
		return sub
	}
	if h.subs[channel] == nil {
		h.subs[channel] = make(map[*subscriber]struct{})
	}
	h.subs[channel][sub] = struct{}{}
	return sub
}

func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub.channel][sub]; !ok {
		return
	}
	delete(h.subs[sub.channel], sub)
	if len(h.subs[sub.channel]) == 0 {
		delete(h.subs, sub.channel)
	}
	close(sub.ch)
	close(sub.gone)
}

// publish delivers payload to every subscriber of channel without blocking.
// A subscriber whose buffer is full loses its oldest payload and gets ""
// appended, so it knows to resync.
func (h *hub) publish(channel, payload string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[channel] {
		select {
		case sub.ch <- payload:
			continue
		default:
		}
		select { // full: make room, then ask for a resync
		case <-sub.ch:
		default:
		}
		select {
		case sub.ch <- "":
		default:
		}
	}
}

// closeAll ends every subscription.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, subs := range h.subs {
		for sub := range subs {
			close(sub.ch)
			close(sub.gone)
		}
	}
	clear(h.subs)
}
