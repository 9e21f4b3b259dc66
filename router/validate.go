package router

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/velo-run/velo/internal/apidoc"
)

// A component with validate = true has its calls checked against its
// OpenAPI document before it runs. The document is read from the store
// when a deployment first appears in the table (never per call) and kept
// per deployment.

// openAPIStore is what request validation reads when the table changes.
type openAPIStore interface {
	OpenAPI(ctx context.Context, deployment int64) ([]byte, error)
}

// maxValidatedBody bounds the body a validated call may send: the
// validator reads it whole.
const maxValidatedBody = 1 << 20

// validatorFor returns the validator of deployment d, loading it once.
// A deployment without a usable document gets none (and a warning): it
// was checked at deploy, so this only happens to one deployed before.
func (r *Router) validatorFor(ctx context.Context, name string, d int64) *apidoc.Validator {
	r.mu.Lock()
	v, ok := r.validators[d]
	r.mu.Unlock()
	if ok {
		return v
	}
	os, isOS := r.store.(openAPIStore)
	if !isOS {
		return nil
	}
	raw, err := os.OpenAPI(ctx, d)
	if err != nil {
		r.cfg.Logger.Warn("read openapi document failed", "component", name, "deployment", d, "err", err)
		return nil // tried again at the next refresh
	}
	if raw != nil {
		doc, err := apidoc.Load(ctx, raw)
		if err == nil {
			v, err = apidoc.NewValidator(doc)
		}
		if err != nil {
			r.cfg.Logger.Warn("openapi document unusable; calls not validated", "component", name, "deployment", d, "err", err)
		}
	}
	r.mu.Lock()
	r.validators[d] = v
	r.mu.Unlock()
	return v
}

// validateCall checks a call of a component with validate = true; on a
// mismatch it answers (400 naming the parameter or the body, 404/405 for
// no such operation, 413 for a body too large to check) and returns
// false.
func (r *Router) validateCall(w http.ResponseWriter, req *http.Request, rt *route, mount string, start time.Time) bool {
	v := rt.validator
	if v == nil {
		return true
	}
	refuse := func(status int, msg string) bool {
		plain(w, status, msg)
		r.count(rt, status, start)
		return false
	}
	if req.Body != nil && req.Body != http.NoBody {
		body, err := io.ReadAll(io.LimitReader(req.Body, maxValidatedBody+1))
		if err != nil {
			return refuse(http.StatusBadRequest, "reading the body failed")
		}
		if len(body) > maxValidatedBody {
			return refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("a body checked against the OpenAPI document is at most %d bytes", maxValidatedBody))
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	u := *req.URL
	u.Path = req.URL.Path[len(mount):]
	if u.Path == "" {
		u.Path = "/"
	}
	u.RawPath = ""
	check := req.Clone(req.Context())
	check.URL = &u
	if ref := v.Check(check); ref != nil {
		return refuse(ref.Status, "bad request: "+ref.Msg)
	}
	if check.Body != nil {
		req.Body = check.Body // read and put back by the validator
	}
	return true
}
