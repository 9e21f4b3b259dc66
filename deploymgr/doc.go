// Package deploymgr is Velo's control plane: it takes new versions in
// (archive uploads, and GitHub pushes), validates them before storing
// anything, records deployments, places them on workers, promotes a
// deployment to live once its workers have prepared it, and serves the REST
// API that the CLI and the dashboard use.
//
// It never runs user code and never serves component traffic: workers and
// routers do, converging on what deploymgr writes to the store.
package deploymgr
