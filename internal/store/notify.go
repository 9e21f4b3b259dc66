package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// Channel names a notification channel. Each carries one kind of payload,
// declared with it; a Note of a channel is made only by that channel's
// constructor, so every sender agrees on what the payload is.
type Channel string

const (
	// ChannelRoutes: the route table may have changed (a deployment went
	// live, a placement became ready or went away, a worker restarted).
	// Payload: the component whose routes changed, which a router reads
	// again alone (RoutesChangedFor); none when the change concerns more
	// than one, and a router reloads the whole table (RoutesChanged).
	ChannelRoutes Channel = "routes"
	// ChannelPlacements: placements were made, prepared, failed or
	// retired. Payload: the deployment's ID, or none when the change
	// concerns more than one. Made by PlacementsChanged.
	ChannelPlacements Channel = "placements"
	// ChannelDeployments: a deployment was recorded or is wanted live.
	// Payload: its ID. Made by DeploymentChanged.
	ChannelDeployments Channel = "deployments"
	// ChannelLogs: a component wrote log lines. Payload: its name. Made by
	// LogsWritten.
	ChannelLogs Channel = "logs"
	// ChannelSecrets: a component's secrets changed; workers restart its
	// instances with them. Payload: its name. Made by SecretsChanged.
	ChannelSecrets Channel = "secrets"
	// ChannelSessions: a dashboard session ended (signed out); routers
	// forget it at once rather than when its cached entry expires.
	// Payload: the session's hash (Session.Hash). Made by SessionEnded.
	ChannelSessions Channel = "sessions"
)

// Note is one notification: a channel and a payload of that channel's
// kind. The zero payload, on every channel, means "resync": the listener
// may have missed something.
type Note struct {
	channel Channel
	payload string
}

// RoutesChanged is the Note on ChannelRoutes for a change of more than
// one component (or of an unknown one): the whole table is read again.
func RoutesChanged() Note { return Note{channel: ChannelRoutes} }

// RoutesChangedFor is the Note on ChannelRoutes for a change of
// component's routes alone; "" is RoutesChanged.
func RoutesChangedFor(component string) Note {
	return Note{channel: ChannelRoutes, payload: component}
}

// RoutesChangedAt is RoutesChangedFor (component "" for more than one)
// that also carries the route version the change was counted as (see
// BumpRouteVersion): a router reports the versions it has applied, and
// the deploymgr calls a deployment live once every router has.
func RoutesChangedAt(component string, version int64) Note {
	return Note{channel: ChannelRoutes, payload: component + "@" + strconv.FormatInt(version, 10)}
}

// PlacementsChanged is the Note on ChannelPlacements for deployment d; d 0
// means more than one (or unknown).
func PlacementsChanged(d int64) Note {
	return Note{channel: ChannelPlacements, payload: idPayload(d)}
}

// DeploymentChanged is the Note on ChannelDeployments for deployment d.
func DeploymentChanged(d int64) Note {
	return Note{channel: ChannelDeployments, payload: idPayload(d)}
}

// LogsWritten is the Note on ChannelLogs for component.
func LogsWritten(component string) Note { return Note{channel: ChannelLogs, payload: component} }

// SecretsChanged is the Note on ChannelSecrets for component.
func SecretsChanged(component string) Note { return Note{channel: ChannelSecrets, payload: component} }

// SessionEnded is the Note on ChannelSessions for the session whose hash
// (Session.Hash) is hash.
func SessionEnded(hash string) Note { return Note{channel: ChannelSessions, payload: hash} }

// Session is the hash of the session a ChannelSessions note names ("" on
// a resync or another channel's note).
func (n Note) Session() string {
	if n.channel != ChannelSessions {
		return ""
	}
	return n.payload
}

func idPayload(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

// Channel is the channel the note goes on.
func (n Note) Channel() Channel { return n.channel }

// Resync reports whether the note says only "you may have missed
// something": every listener gets one after the Postgres connection
// carrying notifications came back from a drop, and when it fell too far
// behind.
func (n Note) Resync() bool { return n.payload == "" }

// Component is the component a ChannelLogs, ChannelSecrets or
// ChannelRoutes note names ("" on a resync or another channel's note).
func (n Note) Component() string {
	if n.channel != ChannelLogs && n.channel != ChannelSecrets && n.channel != ChannelRoutes {
		return ""
	}
	if n.channel == ChannelRoutes {
		if i := strings.LastIndexByte(n.payload, '@'); i >= 0 {
			return n.payload[:i] // RoutesChangedAt (names have no '@')
		}
	}
	return n.payload
}

// Deployment is the deployment a ChannelPlacements or ChannelDeployments
// note names (0 on a resync, for more than one, or on another channel's
// note).
func (n Note) Deployment() int64 {
	if n.channel != ChannelPlacements && n.channel != ChannelDeployments {
		return 0
	}
	d, err := strconv.ParseInt(n.payload, 10, 64)
	if err != nil || d < 0 {
		return 0
	}
	return d
}

// Version is the route version a ChannelRoutes note made by
// RoutesChangedAt carries; 0 for any other note.
func (n Note) Version() int64 {
	if n.channel != ChannelRoutes {
		return 0
	}
	i := strings.LastIndexByte(n.payload, '@')
	if i < 0 {
		return 0
	}
	v, err := strconv.ParseInt(n.payload[i+1:], 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// String is the note as psql's LISTEN shows it: channel and payload.
func (n Note) String() string { return string(n.channel) + " " + strconv.Quote(n.payload) }

// listenBuffer is how many notes a slow listener may fall behind before
// the hub starts dropping its oldest ones.
const listenBuffer = 64

// Notify sends n to every Listen on its channel, in this process and, on
// Postgres, in every other process using the database (pg_notify).
func (s *Store) Notify(ctx context.Context, n Note) error {
	if n.channel == "" {
		return errors.New("notify: a note without a channel")
	}
	if err := s.db.notify(ctx, string(n.channel), n.payload); err != nil {
		return fmt.Errorf("notify %s: %w", n.channel, err)
	}
	return nil
}

// Listen delivers the notes sent on channel from now on, until ctx is done
// or the Store closes; then the channel is closed.
//
// A listener also gets resync notes (Note.Resync): after the Postgres
// connection carrying notifications came back from a drop, and when the
// listener fell more than a small buffer behind (the hub then drops the
// oldest notes rather than block everyone else).
func (s *Store) Listen(ctx context.Context, channel Channel) (<-chan Note, error) {
	if channel == "" {
		return nil, errors.New("listen: empty channel name")
	}
	sub := s.hub.subscribe(string(channel))
	if err := s.db.listen(ctx, string(channel)); err != nil {
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
	ch      chan Note
	gone    chan struct{} // closed with ch, when unsubscribed
}

func newHub() *hub {
	return &hub{subs: make(map[string]map[*subscriber]struct{})}
}

func (h *hub) subscribe(channel string) *subscriber {
	sub := &subscriber{channel: channel, ch: make(chan Note, listenBuffer), gone: make(chan struct{})}
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
// A subscriber whose buffer is full loses its oldest note and gets a resync
// note appended.
func (h *hub) publish(channel, payload string) {
	n := Note{channel: Channel(channel), payload: payload}
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs[channel] {
		select {
		case sub.ch <- n:
			continue
		default:
		}
		select { // full: make room, then ask for a resync
		case <-sub.ch:
		default:
		}
		select {
		case sub.ch <- Note{channel: n.channel}:
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
