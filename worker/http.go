package worker

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strconv"

	"github.com/velo-run/velo/internal/headlen"
)

// Headers of the internal router → worker call. They match the router's
// (router.HeaderInvoke…); the worker does not import the router.
const (
	headerInvokeDeployment    = "X-Velo-Invoke-Deployment"
	headerInvokeMount         = "X-Velo-Invoke-Mount"
	headerClientAuthorization = "X-Velo-Client-Authorization"
	headerNotServed           = "X-Velo-Not-Served"
	headerRemoteAddr          = "X-Velo-Remote-Addr"
)

// Handler is the worker's internal endpoint for calls forwarded by routers
// on other machines. Every request must carry the cluster token as
// "Authorization: Bearer TOKEN" (compared in constant time) and name the
// deployment and mount in X-Velo-Invoke-Deployment and X-Velo-Invoke-Mount.
// The caller's own Authorization header, if any, travels in
// X-Velo-Client-Authorization and is restored before the component sees the
// request; the client's address travels in X-Velo-Remote-Addr and becomes
// r.RemoteAddr.
//
// A call for a deployment being prepared here waits for it (until the
// router's deadline). When the worker does not serve the deployment (its
// preparation failed, or it is already retired), it answers 421 with an X-Velo-Not-Served header without
// reading the body, so the router may send the request to another worker.
//
// An empty token refuses every call.
func (w *Worker) Handler(token string) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := r.Header
		auth := h["Authorization"]
		if token == "" || len(auth) != 1 || subtle.ConstantTimeCompare([]byte(auth[0]), want) != 1 {
			rw.Header().Set("WWW-Authenticate", `Bearer realm="velo-cluster"`)
			http.Error(rw, "cluster token required", http.StatusUnauthorized)
			return
		}
		deps := h[headerInvokeDeployment]
		if len(deps) != 1 {
			http.Error(rw, "missing "+headerInvokeDeployment, http.StatusBadRequest)
			return
		}
		d, err := strconv.ParseInt(deps[0], 10, 64)
		if err != nil || d <= 0 {
			http.Error(rw, "bad "+headerInvokeDeployment, http.StatusBadRequest)
			return
		}
		var mount string
		if m := h[headerInvokeMount]; len(m) > 0 {
			mount = m[0]
		}
		inst, ok := w.instance(r.Context(), d)
		if !ok {
			rw.Header()[headerNotServed] = deps
			http.Error(rw, "deployment "+deps[0]+" is not served by worker "+w.cfg.Name, http.StatusMisdirectedRequest)
			return
		}
		if ca, ok := h[headerClientAuthorization]; ok {
			h["Authorization"] = ca
			delete(h, headerClientAuthorization)
		} else {
			delete(h, "Authorization")
		}
		delete(h, headerInvokeDeployment)
		delete(h, headerInvokeMount)
		// The client's address as the router determined it: REMOTE_ADDR.
		if ra := h[headerRemoteAddr]; len(ra) == 1 {
			r.RemoteAddr = net.JoinHostPort(ra[0], "0")
		}
		delete(h, headerRemoteAddr)
		if r.Method == http.MethodHead {
			// The Content-Length the GET would have: the router passes it on.
			hw := headlen.New(rw)
			inst.Serve(hw, r, mount)
			hw.Finish()
			return
		}
		inst.Serve(rw, r, mount)
	})
}
