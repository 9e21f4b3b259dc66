// Package deploymgr is Velo's control plane: it takes new versions in
// (archive uploads, and GitHub pushes), validates them before storing
// anything, records deployments, places them on workers, promotes a
// deployment to live once its workers have prepared it, and serves the REST
// API that the CLI and the dashboard use.
//
// It never runs user code and never serves component traffic: workers and
// routers do, converging on what deploymgr writes to the store.
//
// Files by what they do:
//
//   - manager.go: Config, Manager, its Store and the control loop (Run).
//   - deploy.go: a new version in (Deploy): validation before anything is stored.
//   - schedule.go, placement.go, autoscale.go: placing deployments on
//     workers, promoting and retiring them, spreading load, and Docker
//     replicas following the request rate.
//   - leader.go: one leading deploymgr per cluster.
//   - api.go and api_*.go: the REST API — routes and errors (api.go),
//     authentication (api_auth.go), who reaches what (api_access.go), and
//     one file per resource (components, deployments, logs, stats, tokens,
//     secrets).
//   - github.go and github_*.go: the GitHub App integration — webhook
//     intake (github_webhook.go), its persistent job queue (github_queue.go),
//     installation sync (github_sync.go), turning a push into a deployment
//     (github_deploy.go) and reporting back to GitHub (github_report.go).
package deploymgr
