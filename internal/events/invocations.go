package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/store"
)

// Invocation states, as the API shows them.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateDead      = "dead"
)

// riverStates are the River job states an invocation in each state may be
// in; stateOf decides (a held running job is queued, a scheduled one
// after an attempt failed).
var riverStates = map[string][]rivertype.JobState{
	StateQueued:    {rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateScheduled, rivertype.JobStateRunning},
	StateRunning:   {rivertype.JobStateRunning},
	StateSucceeded: {rivertype.JobStateCompleted},
	StateFailed:    {rivertype.JobStateRetryable, rivertype.JobStateScheduled},
	StateDead:      {rivertype.JobStateDiscarded, rivertype.JobStateCancelled},
}

// stateOf maps a River job state to an invocation state.
func stateOf(j *rivertype.JobRow) string {
	switch j.State {
	case rivertype.JobStateRunning:
		if j.Attempt > 0 && heldAttempt(j) == j.Attempt {
			return StateQueued // fetched, but waiting for a slot or its paused component
		}
		return StateRunning
	case rivertype.JobStateCompleted:
		return StateSucceeded
	case rivertype.JobStateRetryable:
		return StateFailed
	case rivertype.JobStateDiscarded, rivertype.JobStateCancelled:
		return StateDead
	case rivertype.JobStateScheduled:
		if j.Attempt > 0 {
			return StateFailed
		}
	}
	return StateQueued
}

// ValidState reports whether s is an invocation state (for ?state=).
func ValidState(s string) bool { _, ok := riverStates[s]; return ok }

// ErrNotFound is returned for an id that is no invocation.
var ErrNotFound = store.ErrNotFound

// Invocation returns invocation id with its attempts and last answer.
func (e *Engine) Invocation(ctx context.Context, id int64) (api.Invocation, error) {
	j, err := e.client.JobGet(ctx, id)
	if errors.Is(err, rivertype.ErrNotFound) {
		return api.Invocation{}, ErrNotFound
	}
	if err != nil {
		return api.Invocation{}, fmt.Errorf("invocation %d: %w", id, err)
	}
	inv, err := invocationOf(j)
	if err != nil {
		return api.Invocation{}, err
	}
	atts, err := e.st.Attempts(ctx, id)
	if err != nil {
		return api.Invocation{}, err
	}
	for _, a := range atts {
		inv.Attempts = append(inv.Attempts, api.Attempt{Attempt: a.Attempt, StartedAt: a.StartedAt,
			DurationMS: float64(a.Duration.Microseconds()) / 1000, Status: a.Status, Error: a.Error})
	}
	if n := len(atts); n > 0 && atts[n-1].Status != 0 {
		last := atts[n-1]
		ans := &api.Answer{Status: last.Status, Headers: map[string][]string{}, Body: last.Body}
		if len(last.Headers) > 0 {
			_ = json.Unmarshal(last.Headers, &ans.Headers)
		}
		if ans.Body == nil {
			ans.Body = []byte{}
		}
		inv.Answer = ans
	}
	return inv, nil
}

// invocationOf renders a job without its attempts.
func invocationOf(j *rivertype.JobRow) (api.Invocation, error) {
	if j.Kind != (callArgs{}).Kind() {
		return api.Invocation{}, ErrNotFound
	}
	var a callArgs
	if err := json.Unmarshal(j.EncodedArgs, &a); err != nil {
		return api.Invocation{}, fmt.Errorf("invocation %d: %w", j.ID, err)
	}
	path, _, _ := strings.Cut(a.URI, "?")
	inv := api.Invocation{
		ID: j.ID, Component: a.Component, State: stateOf(j), Source: a.Source, Method: a.Method, Path: path,
		Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Attempts: []api.Attempt{}, CreatedAt: j.CreatedAt.UTC(),
	}
	if a.Tick != 0 {
		t := time.UnixMicro(a.Tick).UTC()
		inv.ScheduledFor = &t
	}
	if n := len(j.Errors); n > 0 {
		inv.LastError = j.Errors[n-1].Error
	}
	switch inv.State {
	case StateQueued, StateFailed:
		t := j.ScheduledAt.UTC()
		inv.NextAttemptAt = &t
	}
	if j.FinalizedAt != nil {
		t := j.FinalizedAt.UTC()
		inv.FinishedAt = &t
	}
	return inv, nil
}

// Invocations lists a component's newest invocations, in state when it is
// not "", at most limit.
func (e *Engine) Invocations(ctx context.Context, component, state string, limit int) ([]api.Invocation, error) {
	limit = max(1, min(limit, 1000))
	p := river.NewJobListParams().Queues(store.EventQueue(component)).Kinds((callArgs{}).Kind()).
		OrderBy(river.JobListOrderByID, river.SortOrderDesc).First(limit)
	if state != "" {
		p = p.States(riverStates[state]...)
	}
	out := make([]api.Invocation, 0, min(limit, 100))
	for {
		res, err := e.client.JobList(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("invocations of %s: %w", component, err)
		}
		for _, j := range res.Jobs {
			inv, err := invocationOf(j)
			if err != nil || inv.Component != component || (state != "" && inv.State != state) {
				continue
			}
			if out = append(out, inv); len(out) == limit {
				return out, nil
			}
		}
		// A page short of limit after the filter: the next one, until
		// River has no more.
		if len(res.Jobs) < limit || res.LastCursor == nil || state == "" {
			return out, nil
		}
		p = p.After(res.LastCursor)
	}
}

// Component returns the component of invocation id, for access checks.
func (e *Engine) Component(ctx context.Context, id int64) (string, error) {
	j, err := e.client.JobGet(ctx, id)
	if errors.Is(err, rivertype.ErrNotFound) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("invocation %d: %w", id, err)
	}
	inv, err := invocationOf(j)
	return inv.Component, err
}

// ErrRunning is the error of Replay and Discard for a running invocation.
var ErrRunning = errors.New("the invocation is running")

// Replay runs invocation id again (a dead one gets one more attempt; a
// waiting one runs now).
func (e *Engine) Replay(ctx context.Context, id int64) error {
	j, err := e.client.JobGet(ctx, id)
	if errors.Is(err, rivertype.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("replay %d: %w", id, err)
	}
	if j.State == rivertype.JobStateRunning {
		return ErrRunning
	}
	if _, err := e.client.JobRetry(ctx, id); err != nil {
		return fmt.Errorf("replay %d: %w", id, err)
	}
	var a callArgs
	if json.Unmarshal(j.EncodedArgs, &a) == nil {
		e.work(j.Queue, a.Events.Concurrency)
	}
	return nil
}

// Discard drops invocation id.
func (e *Engine) Discard(ctx context.Context, id int64) error {
	_, err := e.client.JobDelete(ctx, id)
	switch {
	case errors.Is(err, rivertype.ErrNotFound):
		return ErrNotFound
	case errors.Is(err, rivertype.ErrJobRunning):
		return ErrRunning
	case err != nil:
		return fmt.Errorf("discard %d: %w", id, err)
	}
	return nil
}

// Counts returns a component's queued, running and dead calls.
func (e *Engine) Counts(ctx context.Context, component string) (api.EventCounts, error) {
	c, err := e.st.EventCounts(ctx, store.EventQueue(component))
	if err != nil {
		return api.EventCounts{}, err
	}
	return api.EventCounts{Queued: c.Queued, Running: c.Running, Dead: c.Dead}, nil
}

// StatusOf maps the errors of this package to HTTP statuses, for the API.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrRunning):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}
