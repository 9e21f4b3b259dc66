package worker

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/velo-run/velo/internal/manifest"
)

// Runtime turns a deployment's unpacked artifact into something that serves
// requests. The wasm and docker packages implement it; the worker owns the
// lifecycle and calls it.
//
// Lifecycle: Prepare is called once per deployment on this worker, before any
// request is routed to it; it does all slow work (compiling a module,
// building an image) so that the first request is fast. The returned Instance
// serves requests until Close. Runtime.Close is called once at shutdown,
// after every Instance it returned has been closed.
//
// Concurrency: Prepare may be called concurrently for different deployments;
// Instance.Serve is called concurrently from many goroutines.
//
// Errors: Prepare returns an error that explains to the user why the
// deployment cannot run (it is shown as the deployment's failure reason);
// details go to spec.BuildLog. Serve never returns an error: it answers the
// request itself (502 when the component misbehaves, 504 past its timeout).
type Runtime interface {
	// Name is the manifest runtime this implements: "wasm" or "docker".
	Name() string
	// Prepare readies the artifact in spec.Dir to serve spec.
	Prepare(ctx context.Context, spec Spec) (Instance, error)
	// Close releases what the runtime holds (caches, clients).
	Close(ctx context.Context) error
}

// Instance serves the requests of one prepared deployment.
type Instance interface {
	// Serve answers one request. r.URL.Path is the full request path; mount
	// is the prefix the component is served under ("/fn/hello", or "" when
	// served on its own host), so the component sees
	// strings.TrimPrefix(r.URL.Path, mount) as its own path.
	Serve(w http.ResponseWriter, r *http.Request, mount string)
	// Close stops the instance; requests in flight are allowed to finish
	// until ctx is done.
	Close(ctx context.Context) error
}

// Spec is what a runtime needs to know to prepare one deployment.
type Spec struct {
	Component  string
	Deployment int64
	// Digest is the sha256 (hex) of the artifact: equal digests hold equal
	// files, so runtimes key their caches (compiled modules, images) on it.
	Digest string
	// Dir is the artifact unpacked on local disk, read-only for the runtime.
	Dir      string
	Manifest manifest.Manifest
	// Secrets are the component's secrets (name → value), delivered as
	// environment variables beside the manifest's [env] (a secret wins on
	// a clash, which deploymgr refuses anyway). Never log or store them.
	Secrets map[string]string
	// Restart is 0 at the first Prepare of a deployment on this worker and
	// n at its n-th Prepare again because its secrets changed; the old
	// instance keeps serving until the new one is ready, so the two live
	// side by side and must not collide (container names).
	Restart int
	// BuildLog receives human-readable progress of Prepare.
	BuildLog io.Writer
	// Logs receives what the running component writes to stdout/stderr.
	Logs LogSink
}

// LogSink takes the lines a component writes. Implementations must be safe
// for concurrent use and must not block for long: the worker batches lines
// into the store.
type LogSink interface {
	Log(stream string, at time.Time, line string)
}

// Streams a LogSink receives.
const (
	Stdout = "stdout"
	Stderr = "stderr"
	System = "velo" // events about the component written by Velo itself
)

// Retirer is implemented by runtimes that keep something per artifact
// beyond an instance's life (the docker runtime keeps the image, so that a
// restart does not rebuild it). The worker calls Retire after closing an
// instance whose deployment was replaced, once no instance on this worker
// uses that component's artifact any more.
type Retirer interface {
	Retire(ctx context.Context, component, digest string) error
}
