package worker

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/velo-run/velo/internal/shell"
)

// Sheller is implemented by instances that can run a command inside
// themselves for `velo shell`: Docker containers. WASM instances do not:
// every call runs in a fresh module instance that ends with the call.
type Sheller interface {
	// Shell starts req's command in a running instance and returns it;
	// who is the user who asked, for the component's logs.
	Shell(ctx context.Context, req shell.Request, who string) (shell.Process, error)
}

// Shell starts req's command in the instance of deployment d on this
// worker (waiting for its preparation, as a call does). It fails with a
// *shell.Error: 421 when d is not served here, 409 when its runtime has
// no shell (WASM), 503 when no container could run it.
func (w *Worker) Shell(ctx context.Context, d int64, req shell.Request, who string) (shell.Process, error) {
	inst, ok := w.instance(ctx, d)
	if !ok {
		return nil, &shell.Error{Status: http.StatusMisdirectedRequest, Msg: fmt.Sprintf("deployment %d is not served by worker %s", d, w.cfg.Name)}
	}
	if l, ok := inst.(*limited); ok {
		inst = l.Instance
	}
	sh, ok := inst.(Sheller)
	if !ok {
		w.mu.Lock()
		rt := w.loaded[d].runtime
		w.mu.Unlock()
		return nil, &shell.Error{Status: http.StatusConflict, Msg: shell.Unsupported(rt)}
	}
	p, err := sh.Shell(ctx, req, who)
	if err != nil {
		return nil, &shell.Error{Status: http.StatusServiceUnavailable, Msg: fmt.Sprintf("no container could run the command: %v", err)}
	}
	return p, nil
}

// ShellPath is the worker's internal endpoint for shells.
const ShellPath = shell.WorkerPath

// ShellHandler serves ShellPath for deploymgr: a shell upgrade (see
// package shell) that carries the cluster token as "Authorization: Bearer
// TOKEN", the deployment in X-Velo-Shell-Deployment and the user who asked
// in X-Velo-Shell-User, and the command in the query. deploymgr has
// authorized the user; the worker trusts the cluster token. The session
// runs until the command ends or the caller goes away; closing the
// instance (a new version, the worker stopping) cuts it off. An empty
// token refuses every call.
func (w *Worker) ShellHandler(token string) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		auth := r.Header["Authorization"]
		if token == "" || len(auth) != 1 || subtle.ConstantTimeCompare([]byte(auth[0]), want) != 1 {
			rw.Header().Set("WWW-Authenticate", `Bearer realm="velo-cluster"`)
			http.Error(rw, "cluster token required", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodPost || !shell.IsUpgrade(r) {
			http.Error(rw, "want POST with Upgrade: "+shell.Protocol, http.StatusUpgradeRequired)
			return
		}
		d, err := strconv.ParseInt(r.Header.Get(shell.HeaderDeployment), 10, 64)
		if err != nil || d <= 0 {
			http.Error(rw, "bad "+shell.HeaderDeployment, http.StatusBadRequest)
			return
		}
		who := r.Header.Get(shell.HeaderUser)
		if who == "" {
			http.Error(rw, "missing "+shell.HeaderUser, http.StatusBadRequest)
			return
		}
		req, err := shell.ParseRequest(r.URL.Query())
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		p, err := w.Shell(r.Context(), d, req, who)
		if err != nil {
			status := http.StatusInternalServerError
			var se *shell.Error
			if errors.As(err, &se) {
				status = se.Status
			}
			http.Error(rw, err.Error(), status)
			return
		}
		conn, err := shell.Upgrade(rw, r)
		if err != nil {
			p.Close()
			return
		}
		// The request's context no longer follows the connection: the
		// session ends with the command, the caller or the instance.
		_, _ = shell.Serve(context.WithoutCancel(r.Context()), conn, p)
	})
}
