// Package migrations holds Velo's schema as numbered SQL files, one directory
// per database engine, embedded into the binary.
//
// Files are named NNNN_name.sql and applied in version order, each once; both
// engines carry the same versions so a schema change is made in both or
// neither. The package only lists and reads the files: applying them (locking,
// the schema_migrations bookkeeping) is the store's job.
package migrations
