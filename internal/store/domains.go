package store

import (
	"context"
	"fmt"
	"slices"
)

// DomainTakenError is ClaimDomains refusing a domain another component
// holds.
type DomainTakenError struct {
	Domain, Holder string
}

func (e *DomainTakenError) Error() string {
	return fmt.Sprintf("domain %s belongs to component %q", e.Domain, e.Holder)
}

// ClaimDomains makes component the holder of domains, in one transaction:
// refused with a *DomainTakenError (and nothing changed) when another
// component holds one of them. The component's other claims are released
// unless keep lists them (the domains of the deployment that is live while
// the new one is prepared). ErrNotFound when the component does not exist.
func (s *Store) ClaimDomains(ctx context.Context, component string, domains, keep []string) error {
	err := s.tx(ctx, func(q querier) error {
		for _, d := range domains {
			if _, err := q.exec(ctx, `INSERT INTO domains (domain, component) VALUES ($1, $2)
				ON CONFLICT (domain) DO NOTHING`, d, component); err != nil {
				return mapErr(err)
			}
			var holder string
			if err := q.queryRow(ctx, `SELECT component FROM domains WHERE domain = $1`, d).Scan(&holder); err != nil {
				return err
			}
			if holder != component {
				return &DomainTakenError{Domain: d, Holder: holder}
			}
		}
		held, err := domainsOf(ctx, q, component)
		if err != nil {
			return err
		}
		for _, d := range held {
			if !slices.Contains(domains, d) && !slices.Contains(keep, d) {
				if _, err := q.exec(ctx, `DELETE FROM domains WHERE domain = $1 AND component = $2`, d, component); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("claim domains of %s: %w", component, err)
	}
	return nil
}

// Domains returns the domains component holds, in order.
func (s *Store) Domains(ctx context.Context, component string) ([]string, error) {
	out, err := domainsOf(ctx, s.db, component)
	if err != nil {
		return nil, fmt.Errorf("domains of %s: %w", component, err)
	}
	return out, nil
}

func domainsOf(ctx context.Context, q querier, component string) ([]string, error) {
	rs, err := q.query(ctx, `SELECT domain FROM domains WHERE component = $1 ORDER BY domain`, component)
	return collect(rs, err, scanString)
}

// allDomains maps every claimed domain's component to its domains.
func allDomains(ctx context.Context, q querier) (map[string][]string, error) {
	rs, err := q.query(ctx, `SELECT component, domain FROM domains ORDER BY component, domain`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string][]string{}
	for rs.Next() {
		var c, d string
		if err := rs.Scan(&c, &d); err != nil {
			return nil, err
		}
		out[c] = append(out[c], d)
	}
	return out, rs.Err()
}
