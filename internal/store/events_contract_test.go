package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func testEvents(t *testing.T, s *Store) {
	ctx := context.Background()
	must(t, s.CreateComponent(ctx, Component{Name: "ev", Runtime: "wasm"}))

	// River's schema is there: its job table answers.
	c, err := s.EventCounts(ctx, EventQueue("ev"))
	must(t, err)
	if c != (EventCounts{}) {
		t.Errorf("EventCounts of an empty queue = %+v", c)
	}
	if q, err := s.PendingEventQueues(ctx); err != nil || len(q) != 0 {
		t.Errorf("PendingEventQueues = %v, %v; want none", q, err)
	}

	start := time.Now().UTC().Truncate(time.Microsecond)
	must(t, s.AddAttempt(ctx, Attempt{Invocation: 7, Attempt: 1, Component: "ev", StartedAt: start,
		Duration: 3 * time.Millisecond, Status: 503, Error: "HTTP 503", Headers: []byte(`{"A":["b"]}`), Body: []byte("down")}))
	must(t, s.AddAttempt(ctx, Attempt{Invocation: 7, Attempt: 2, Component: "ev", StartedAt: start.Add(time.Second),
		Duration: time.Millisecond, Status: 200, Body: []byte("ok\x00")}))
	// Recording an attempt again (a rescued run) replaces it.
	must(t, s.AddAttempt(ctx, Attempt{Invocation: 7, Attempt: 2, Component: "ev", StartedAt: start.Add(2 * time.Second),
		Duration: time.Millisecond, Status: 201, Body: []byte("ok\x00")}))
	as, err := s.Attempts(ctx, 7)
	must(t, err)
	if len(as) != 2 || as[0].Status != 503 || as[0].Error != "HTTP 503" || string(as[0].Body) != "down" ||
		!as[0].StartedAt.Equal(start) || as[0].Duration != 3*time.Millisecond || string(as[0].Headers) != `{"A":["b"]}` ||
		as[1].Status != 201 || string(as[1].Body) != "ok\x00" {
		t.Errorf("Attempts = %+v", as)
	}
	if err := s.AddAttempt(ctx, Attempt{Invocation: 8, Attempt: 1, Component: "nope", StartedAt: start}); !errors.Is(err, ErrNotFound) {
		t.Errorf("attempt of a missing component: %v, want ErrNotFound", err)
	}
	// AddAttempts: one statement, the last of a repeated attempt counts;
	// with a missing component among them each is tried alone.
	errs, err := s.AddAttempts(ctx, []Attempt{
		{Invocation: 9, Attempt: 1, Component: "ev", StartedAt: start, Status: 500, Error: "first"},
		{Invocation: 9, Attempt: 2, Component: "ev", StartedAt: start, Status: 200},
		{Invocation: 9, Attempt: 1, Component: "ev", StartedAt: start, Status: 502, Error: "again"},
	})
	must(t, err)
	if as, err := s.Attempts(ctx, 9); err != nil || len(errs) != 3 || errs[0] != nil || len(as) != 2 ||
		as[0].Status != 502 || as[0].Error != "again" || as[1].Status != 200 {
		t.Errorf("AddAttempts: %v; Attempts = %+v, %v", errs, as, err)
	}
	errs, err = s.AddAttempts(ctx, []Attempt{
		{Invocation: 10, Attempt: 1, Component: "ev", StartedAt: start, Status: 200},
		{Invocation: 11, Attempt: 1, Component: "nope", StartedAt: start, Status: 200},
	})
	if as, aerr := s.Attempts(ctx, 10); err != nil || len(errs) != 2 || errs[0] != nil || !errors.Is(errs[1], ErrNotFound) || aerr != nil || len(as) != 1 {
		t.Errorf("AddAttempts with a missing component: %v %v; Attempts of the other = %+v, %v", errs, err, as, aerr)
	}

	day := time.Now().Add(-24 * time.Hour)
	if _, err := s.IdempotentInvocation(ctx, "ev", "k1", day); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown key: %v", err)
	}
	id, won, err := s.PutIdempotencyKey(ctx, "ev", "k1", 10, day)
	if err != nil || !won || id != 10 {
		t.Errorf("first PutIdempotencyKey = %d %v %v", id, won, err)
	}
	id, won, err = s.PutIdempotencyKey(ctx, "ev", "k1", 11, day)
	if err != nil || won || id != 10 {
		t.Errorf("second PutIdempotencyKey = %d %v %v, want 10 to win", id, won, err)
	}
	if id, err := s.IdempotentInvocation(ctx, "ev", "k1", day); err != nil || id != 10 {
		t.Errorf("IdempotentInvocation = %d, %v", id, err)
	}
	// A key older than the window is taken over.
	id, won, err = s.PutIdempotencyKey(ctx, "ev", "k1", 12, time.Now().Add(time.Hour))
	if err != nil || !won || id != 12 {
		t.Errorf("PutIdempotencyKey over an expired key = %d %v %v", id, won, err)
	}
	must(t, s.PruneEvents(ctx, time.Now().Add(time.Hour)))
	if as, _ := s.Attempts(ctx, 7); len(as) != 0 {
		t.Errorf("attempts after prune: %d", len(as))
	}

	must(t, s.DeleteComponent(ctx, "ev"))
	if _, err := s.IdempotentInvocation(ctx, "ev", "k1", time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("key after delete: %v", err)
	}
}

func TestEventQueue(t *testing.T) {
	for name, want := range map[string]string{
		"hello":       "hello",
		"a-b-c":       "a-b-c",
		"hello--pr-3": "", // a digest
	} {
		got := EventQueue(name)
		if want != "" && got != want {
			t.Errorf("EventQueue(%q) = %q, want %q", name, got, want)
		}
		if !riverQueueName.MatchString(got) || len(got) > 64 {
			t.Errorf("EventQueue(%q) = %q: not a River queue name", name, got)
		}
	}
	if EventQueue("a--b") == EventQueue("a--c") {
		t.Error("two names share a queue")
	}
}
