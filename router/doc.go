// Package router forwards component calls (/fn/NAME/… or NAME.<domain>) to
// the workers serving the component's live deployment, round-robin.
//
// The request path never touches the store: the route table is an immutable
// snapshot behind an atomic pointer, rebuilt when the store announces a
// change on the "routes" channel and resynced periodically as a safety net.
// Hits, errors and latencies are counted in memory and flushed in batches.
//
// FastServer serves a router's listener: calls to remote workers on event
// loops (fast.go, loop_linux.go; over TLS, fasttls.go); in velo up, calls
// to the worker in the same process on a goroutine per connection that
// calls it directly (fastlocal.go). What none of those take, net/http
// serves through Router.ServeHTTP.
package router
