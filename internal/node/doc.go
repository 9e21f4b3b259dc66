// Package node is Velo's composition root: it builds every role from its
// Config, for `velo up` (Start: every role in one process on one address,
// also how tests start a whole Velo) and for the separate roles of a
// cluster (NewDeploymgr, NewWorker, NewRouter, NewWebUI: one constructor
// per role, each returning a Role to Run).
//
// It holds wiring only; the roles do the work. It reads no environment
// and no flags: cmd/velo does, into these Configs. A setting a role takes
// is a field of that role's Config (documented with the variable and flag
// that set it) and, when `velo up` takes it too, of Config; the
// constructor hands it to the package that uses it. Each Config fills its
// defaults and is validated once, by its constructor, with errors that
// name the variable or flag at fault.
package node
