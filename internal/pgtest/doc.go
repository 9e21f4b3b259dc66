// Package pgtest gives tests a real, fresh Postgres database.
//
// URL creates an empty database per call (dropped when the test ends) in the
// server named by VELO_TEST_DATABASE_URL or, when that is unset, in a
// throwaway server it starts once per test process from the local Postgres
// installation (initdb and pg_ctl, run as an unprivileged user when the
// tests run as root). Main, called from TestMain, stops that server.
//
// Without Postgres the tests that need it skip, except under CI=true, where
// a missing dependency fails them. The package holds the one server of the
// test process in package state; that is its job, and it must not be
// imported outside tests.
package pgtest
