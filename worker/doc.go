// Package worker is Velo's data plane agent. A Worker registers itself in the
// store, prepares the deployments placed on it (fetching the artifact,
// unpacking it, handing it to the Runtime for its kind) and serves their
// requests. It declares Runtime, the contract the wasm and docker packages
// implement; it never imports them.
//
// The worker never decides what runs where: deploymgr writes placements and
// the worker converges on them, so a restarted or new worker catches up by
// itself.
package worker
