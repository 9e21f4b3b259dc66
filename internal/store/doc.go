// Package store is Velo's persistent state: components, deployments,
// artifacts, workers and placements, routes, hit statistics, logs, tokens and
// settings, plus change notifications between roles.
//
// One Store type holds the SQL, next to the method that runs it, and runs it
// on one of two engines behind a tiny internal interface: Postgres (pgxpool)
// for production and embedded SQLite (modernc.org/sqlite, pure Go) for
// single-process use. The SQL is written once for both: $1 placeholders,
// ON CONFLICT, RETURNING, timestamps as unix microseconds in BIGINT columns.
// Driver errors become ErrNotFound and ErrConflict in one place (mapErr) and
// transactions go through one helper (Store.tx).
//
// A Store is safe for concurrent use by many goroutines. On SQLite it holds a
// single connection, so every statement is serialized; that is the price of
// an embedded, lock-free-of-surprises writer and is plenty for one machine.
//
// The store knows nothing about HTTP, GitHub, Docker or WebAssembly: it keeps
// rows and must not call out of the process, except to the database.
package store
