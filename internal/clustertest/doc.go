// Package clustertest runs Velo's roles (deploymgr, worker, router) as
// separate processes of the velo binary, on loopback, against a real
// Postgres (internal/pgtest): a cluster as users run it, for tests that
// need one and are too slow for cmd/velo's package (the Postgres outage).
//
// It builds the binary once per test process; call Run from TestMain so
// that the binary and the Postgres server go when the tests end. It must
// not be imported outside tests. cmd/velo's own cluster tests predate it
// and keep their helpers of the same shape.
package clustertest
