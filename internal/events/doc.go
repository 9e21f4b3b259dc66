// Package events is Velo's event engine: a durable queue of calls on River
// (riverqueue/river) in the store's own database, Postgres through River's
// pgx driver or the embedded SQLite file through River's SQLite driver.
//
// It owns queueing (Engine.Enqueue, which the router calls for
// Prefer: respond-async and POST /events/NAME/…), running (a River worker
// that sends each call down the router's normal call path, router.Invoke),
// retries with backoff and jitter, dead letters, and the invocations API's
// reads and actions (Invocation, Invocations, Replay, Discard).
//
// Each component has a River queue of its own (store.EventQueue) with
// [events] concurrency workers, so that one component's backlog never
// starves another's. It must not claim jobs by hand: River claims them.
// What River leaves slow for a crashed process, rescuing a job whose
// process died mid-call (River's rescuer runs every 30 s and waits an hour
// by default), is done here within the component's timeout plus a few
// seconds, through River's own driver calls.
package events
