// Package worker is Velo's data plane agent. A Worker registers itself in the
// store, prepares the deployments placed on it (fetching the artifact,
// unpacking it, handing it to the Runtime for its kind) and serves their
// requests. It declares Runtime, the contract the wasm and docker packages
// implement; it never imports them.
//
// Every call passes its admission first (admission.go): calls at once per
// component and per worker, and each call's memory reserved against the
// worker's budget, so that no load takes the worker past its memory.
//
// The worker never decides what runs where: deploymgr writes placements and
// the worker converges on them, so a restarted or new worker catches up by
// itself.
package worker
