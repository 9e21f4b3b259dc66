package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
)

// Access answers which repositories a user can reach through the App's
// installations, asking GitHub with the user's own token (GET
// /user/installations and /user/installations/{id}/repositories) and
// remembering the answer briefly. Safe for concurrent use.
type Access struct {
	app  *github.App
	seal *sealer // nil without an OAuth client
	st   Store
	ttl  time.Duration
	log  *slog.Logger

	mu    sync.Mutex
	cache map[string]cachedRepos
}

type cachedRepos struct {
	repos   []string
	expires time.Time
}

func newAccess(app *github.App, seal *sealer, st Store, ttl time.Duration, log *slog.Logger) *Access {
	return &Access{app: app, seal: seal, st: st, ttl: ttl, log: log, cache: make(map[string]cachedRepos)}
}

// Repos implements deploymgr.Access: the admin sees everything, a GitHub
// user the repositories of the App's installations their account can
// reach, anyone else nothing. GitHub refusing the user's token (expired,
// revoked) means no repositories until they sign in again.
func (a *Access) Repos(ctx context.Context, user string) (all bool, repos []string, err error) {
	return a.repos(ctx, user, true)
}

// repos is Repos, with the remembered answer when cached is set, else
// asking GitHub now (for a caller that remembers the answer itself).
func (a *Access) repos(ctx context.Context, user string, cached bool) (all bool, repos []string, err error) {
	if user == AdminUser {
		return true, nil, nil
	}
	login, ok := GitHubLogin(user)
	if !ok || a.app == nil {
		return false, nil, nil
	}
	if cached {
		a.mu.Lock()
		c, ok := a.cache[user]
		a.mu.Unlock()
		if ok && time.Now().Before(c.expires) {
			return false, c.repos, nil
		}
	}
	sealed, err := a.st.GitHubUserToken(ctx, login)
	if errors.Is(err, store.ErrNotFound) || a.seal == nil {
		return false, nil, nil
	} else if err != nil {
		return false, nil, err
	}
	tok, err := a.seal.open(login, sealed)
	if err != nil {
		// Unusable: like a revoked token, until they sign in again.
		a.log.Warn("github token of user unusable; they must sign in again", "user", user, "err", err)
		return false, nil, nil
	}
	repos, err = a.fetch(ctx, tok)
	switch {
	case err != nil && !cached && !errors.Is(err, github.ErrUnauthorized) && !errors.Is(err, github.ErrNotFound):
		// GitHub could not be asked (down, slow, rate-limited): the
		// caller, which would remember "no repositories" for a minute,
		// answers "try again" instead.
		return false, nil, fmt.Errorf("list the repositories of %s on github: %w", user, err)
	case err != nil:
		// Not cached: the next request asks GitHub again.
		a.log.Warn("list user repositories failed", "user", user, "err", err)
		return false, nil, nil
	}
	if cached {
		a.remember(user, repos)
	}
	return false, repos, nil
}

// maxCachedUsers bounds the users whose repositories Access remembers.
const maxCachedUsers = 10000

// remember keeps user's repositories for the ttl. When the cache is full
// the expired entries go, and if none has expired, one other entry.
func (a *Access) remember(user string, repos []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cache[user]; !ok && len(a.cache) >= maxCachedUsers {
		now := time.Now()
		for u, c := range a.cache {
			if !now.Before(c.expires) {
				delete(a.cache, u)
			}
		}
		for u := range a.cache {
			if len(a.cache) < maxCachedUsers {
				break
			}
			delete(a.cache, u)
		}
	}
	a.cache[user] = cachedRepos{repos: repos, expires: time.Now().Add(a.ttl)}
}

func (a *Access) fetch(ctx context.Context, tok string) ([]string, error) {
	ins, err := a.app.UserInstallations(ctx, tok)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range ins {
		rs, err := a.app.UserInstallationRepos(ctx, tok, in.ID)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			out = append(out, r.FullName)
		}
	}
	return out, nil
}

// forget drops what is remembered about user (after they sign in again).
func (a *Access) forget(user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.cache, user)
}
