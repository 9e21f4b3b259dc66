package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// domainStore is what custom domains need of the store.
type domainStore interface {
	ClaimDomains(ctx context.Context, component string, domains, keep []string) error
}

// claimDomains makes the component the holder of the custom domains its
// new manifest lists, before anything of the deployment is stored: a name
// another component holds is refused (409), as is one of Velo's own
// (the domain itself and NAME.<domain>). The live deployment's domains
// stay claimed until the new one replaces it.
func (m *Manager) claimDomains(ctx context.Context, comp store.Component, man manifest.Manifest) error {
	if d := m.cfg.Domain; d != "" {
		for i, h := range man.Domains {
			if h == d || strings.HasSuffix(h, "."+d) {
				return inputErr("%s: domains[%d]: %q is under Velo's own domain %s, where every component already has NAME.%s",
					manifest.FileName, i, h, d, d)
			}
		}
	}
	var keep []string
	if comp.Live != 0 {
		live, err := m.store.Deployment(ctx, comp.Live)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("read live deployment of %s: %w", comp.Name, err)
		}
		var lm struct {
			Domains []string `json:"domains"`
		}
		if len(live.Manifest) > 0 && json.Unmarshal(live.Manifest, &lm) == nil {
			keep = lm.Domains
		}
	}
	err := m.store.ClaimDomains(ctx, man.Name, man.Domains, keep)
	var taken *store.DomainTakenError
	if errors.As(err, &taken) {
		return &ConflictError{Msg: fmt.Sprintf("%s: domains: %s is already used by component %q", manifest.FileName, taken.Domain, taken.Holder)}
	}
	return err
}
