package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/certs"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
)

// secretStore is what the secrets API needs from the store. Values reach
// it sealed only.
type secretStore interface {
	PutSecret(ctx context.Context, s store.Secret) error
	DeleteSecret(ctx context.Context, component, name string) error
	Secrets(ctx context.Context, component string) ([]store.Secret, error)
	SecretsNotSealedBy(ctx context.Context, keyID string, limit int) ([]store.Secret, error)
	SecretKeyIDs(ctx context.Context) ([]string, error)
	ResealSecret(ctx context.Context, old store.Secret, keyID string, sealed []byte) (bool, error)
}

// tlsStore is what a rotation needs of the TLS storage (internal/certs),
// when the store holds one.
type tlsStore interface {
	certs.ResealStore
	TLSKeyIDs(ctx context.Context) ([]string, error)
}

// secretRoutes registers the secrets API on the /api/v1 group. Values go
// in (PUT) and never come out: GET lists names.
func (m *Manager) secretRoutes(g *echo.Group) {
	g.GET("/components/:name/secrets", m.listSecrets)
	g.PUT("/components/:name/secrets/:key", m.putSecret)
	g.DELETE("/components/:name/secrets/:key", m.deleteSecret)
	g.POST("/secrets/rotate-key", m.rotateKey)
}

// errNoKeys answers secret writes on a deploymgr without a keyring.
var errNoKeys = echo.NewHTTPError(http.StatusServiceUnavailable,
	"secrets are not configured on this server: set "+secrets.EnvKey+" (the same keys on deploymgr, webui and every worker; see the README, Secrets)")

func (m *Manager) listSecrets(c echo.Context) error {
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	list, err := m.store.Secrets(c.Request().Context(), comp.Name)
	if err != nil {
		return err
	}
	out := make([]api.Secret, 0, len(list))
	for _, s := range list {
		out = append(out, api.Secret{Name: s.Name, UpdatedAt: s.UpdatedAt, Preview: s.Preview})
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Manager) putSecret(c echo.Context) error {
	ctx := c.Request().Context()
	if m.cfg.Secrets == nil {
		return errNoKeys
	}
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	name := c.Param("key")
	if err := secrets.ValidName(name); err != nil {
		return inputErr("%v", err)
	}
	// ?preview=true marks the secret for the component's previews,
	// ?preview=false unmarks it; without the parameter a replaced value
	// keeps its mark (clients from before previews never change it).
	markPreview, setMark := false, false
	if v := c.QueryParam("preview"); v != "" || c.QueryParams().Has("preview") {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return inputErr("secret %s: preview=%q: want true or false", name, v)
		}
		markPreview, setMark = b, true
	}
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, secrets.MaxValue+1))
	if err != nil {
		return inputErr("secret %s: reading the value failed: %v", name, err)
	}
	if len(body) > secrets.MaxValue {
		return &InputError{Err: fmt.Errorf("secret %s: value is larger than %d bytes", name, secrets.MaxValue), TooLarge: true}
	}
	value := string(body)
	if err := secrets.ValidValue(name, value); err != nil {
		return inputErr("%v", err)
	}
	if err := m.envClash(ctx, comp, name); err != nil {
		return err
	}
	existing, err := m.store.Secrets(ctx, comp.Name)
	if err != nil {
		return err
	}
	if len(existing) >= secrets.MaxPerComponent && !slices.ContainsFunc(existing, func(s store.Secret) bool { return s.Name == name }) {
		return &ConflictError{Msg: fmt.Sprintf("component %q has %d secrets, the most one may hold; remove one first", comp.Name, len(existing))}
	}
	if !setMark {
		for _, s := range existing {
			if s.Name == name {
				markPreview = s.Preview
			}
		}
	}
	if markPreview && isPreview(comp.Name) {
		return inputErr("secret %s: %s is a preview; mark the secret for previews on the component it previews", name, comp.Name)
	}
	keyID, sealed := m.cfg.Secrets.Seal(comp.Name, name, value)
	sec := store.Secret{Component: comp.Name, Name: name, KeyID: keyID, Sealed: sealed, Preview: markPreview}
	if err := m.store.PutSecret(ctx, sec); err != nil {
		return err
	}
	m.secretsChanged(ctx, comp.Name)
	m.log.Info("secret set", "component", comp.Name, "secret", name, "preview", markPreview, "by", c.Get(ctxUser))
	list, err := m.store.Secrets(ctx, comp.Name)
	if err != nil {
		return err
	}
	for _, s := range list {
		if s.Name == name {
			return c.JSON(http.StatusOK, api.Secret{Name: s.Name, UpdatedAt: s.UpdatedAt, Preview: s.Preview})
		}
	}
	return c.JSON(http.StatusOK, api.Secret{Name: name}) // removed meanwhile
}

func (m *Manager) deleteSecret(c echo.Context) error {
	ctx := c.Request().Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	name := c.Param("key")
	if err := m.store.DeleteSecret(ctx, comp.Name, name); errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("component %q has no secret %q", comp.Name, name))
	} else if err != nil {
		return err
	}
	m.secretsChanged(ctx, comp.Name)
	m.log.Info("secret removed", "component", comp.Name, "secret", name, "by", c.Get(ctxUser))
	return c.NoContent(http.StatusNoContent)
}

// secretsChanged tells the workers to restart comp's instances with its
// secrets as they are now. A lost notification is made up for by the
// workers' resync after a reconnect.
func (m *Manager) secretsChanged(ctx context.Context, component string) {
	if err := m.store.Notify(ctx, store.SecretsChanged(component)); err != nil {
		m.log.Warn("notify secrets changed failed", "component", component, "err", err)
	}
}

// envClash refuses a secret whose name the live (or rolling-out)
// deployment's [env] sets too: which value the component saw would be a
// surprise.
func (m *Manager) envClash(ctx context.Context, comp store.Component, name string) error {
	for _, id := range []int64{comp.Live, comp.Target} {
		if id == 0 {
			continue
		}
		d, err := m.store.Deployment(ctx, id)
		if err != nil {
			return fmt.Errorf("read deployment %d: %w", id, err)
		}
		var man manifest.Manifest
		if err := json.Unmarshal(d.Manifest, &man); err != nil {
			return fmt.Errorf("deployment %d: bad manifest: %w", id, err)
		}
		if _, ok := man.Env[name]; ok {
			return &ConflictError{Msg: fmt.Sprintf("secret %s: the [env] of %s's deployment %d (%s) sets %s too; remove it from [env] and redeploy, then set the secret",
				name, comp.Name, id, manifest.FileName, name)}
		}
	}
	return nil
}

// secretsClash refuses a deployment whose [env] sets a name that is also a
// secret of the component, naming both. A preview's (parent: the component
// it previews) clashes with the parent's secrets marked for previews too.
func (m *Manager) secretsClash(ctx context.Context, man manifest.Manifest, parent string) error {
	if len(man.Env) == 0 {
		return nil
	}
	list, err := m.store.Secrets(ctx, man.Name)
	if err != nil {
		return fmt.Errorf("read secrets of %s: %w", man.Name, err)
	}
	owner := man.Name
	if parent != "" {
		inherited, err := m.store.Secrets(ctx, parent)
		if err != nil {
			return fmt.Errorf("read secrets of %s: %w", parent, err)
		}
		for _, s := range inherited {
			if s.Preview {
				list = append(list, s)
			}
		}
	}
	var both []string
	for _, s := range list {
		if _, ok := man.Env[s.Name]; ok && !slices.Contains(both, s.Name) {
			both = append(both, s.Name)
			owner = s.Component
		}
	}
	if len(both) == 0 {
		return nil
	}
	return inputErr("%s: [env] sets %s, also set as secret%s of component %q; keep one: drop it from [env], or remove the secret (velo secrets rm %s %s)",
		manifest.FileName, strings.Join(both, ", "), plural(len(both)), owner, owner, both[len(both)-1])
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// rotateBatch is how many secrets a rotation reads at a time.
const rotateBatch = 500

// rotateKey re-seals every secret under the sealing key. With a key file
// (velo up) it first makes a new key and retires the old ones once nothing
// needs them; with VELO_SECRETS_KEY the operator has put the new key first
// already, and is told when the old ones can go. Admin only.
func (m *Manager) rotateKey(c echo.Context) error {
	ctx := c.Request().Context()
	if sc, err := m.callerScope(c); err != nil {
		return err
	} else if !sc.all {
		return echo.NewHTTPError(http.StatusForbidden, "only the admin may rotate the secrets key")
	}
	kr := m.cfg.Secrets
	if kr == nil {
		return errNoKeys
	}
	var out api.RotateKey
	failed := map[string]bool{} // component/NAME that did not open
	if kr.Rotatable() {
		if _, err := kr.AddKey(); err != nil {
			return fmt.Errorf("new secrets key: %w", err)
		}
	}
	out.Key = kr.Primary()
	for {
		batch, err := m.store.SecretsNotSealedBy(ctx, out.Key, rotateBatch)
		if err != nil {
			return err
		}
		progress := false
		for _, s := range batch {
			if failed[s.Component+"/"+s.Name] {
				continue
			}
			value, err := kr.Open(s.Component, s.Name, s.KeyID, s.Sealed)
			if err != nil {
				failed[s.Component+"/"+s.Name] = true
				out.Failed = append(out.Failed, s.Component+"/"+s.Name+": "+err.Error())
				continue
			}
			keyID, sealed := kr.Seal(s.Component, s.Name, value)
			ok, err := m.store.ResealSecret(ctx, s, keyID, sealed)
			if err != nil {
				return err
			}
			if ok {
				out.Resealed++
			}
			progress = true // a row set meanwhile is sealed under Key already
		}
		if !progress {
			break
		}
	}
	inUse, err := m.store.SecretKeyIDs(ctx)
	if err != nil {
		return err
	}
	// The TLS storage (certificates, their keys, the ACME account) is
	// sealed with the same keyring: sealed again too, or retiring the
	// old key would lose every certificate.
	if ts, ok := m.store.(tlsStore); ok {
		n, bad, err := certs.Reseal(ctx, ts, kr)
		if err != nil {
			return fmt.Errorf("reseal tls storage: %w", err)
		}
		out.ResealedTLS = n
		for _, b := range bad {
			out.Failed = append(out.Failed, "tls "+b)
		}
		ids, err := ts.TLSKeyIDs(ctx)
		if err != nil {
			return err
		}
		inUse = append(inUse, ids...)
		slices.Sort(inUse)
		inUse = slices.Compact(inUse)
	}
	others := slices.DeleteFunc(slices.Clone(inUse), func(id string) bool { return id == out.Key })
	switch {
	case len(others) > 0:
		out.Note = fmt.Sprintf("secrets under key %s could not be opened here and still need it: keep it in %s until they are set again",
			strings.Join(others, ", "), secrets.EnvKey)
	case kr.Rotatable():
		if err := kr.Retire(); err != nil {
			return fmt.Errorf("retire old secrets keys: %w", err)
		}
	case len(kr.IDs()) > 1:
		out.Note = fmt.Sprintf("every secret is sealed under key %s now: remove the other keys from %s on every role and restart them", out.Key, secrets.EnvKey)
	case out.Resealed == 0 && out.ResealedTLS == 0:
		out.Note = fmt.Sprintf("every secret is sealed under key %s already; to rotate, put a new key first on every role: %s=NEW,OLD (make one with `velo secrets new-key`), restart them and run this again",
			out.Key, secrets.EnvKey)
	}
	out.Keys = kr.IDs()
	m.log.Info("secrets key rotated", "key", out.Key, "resealed", out.Resealed, "resealed_tls", out.ResealedTLS, "failed", len(out.Failed), "by", c.Get(ctxUser))
	return c.JSON(http.StatusOK, out)
}
