package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	gh "github.com/google/go-github/v50/github"
	"golang.org/x/oauth2"
)

// OAuthConfig returns the OAuth2 configuration that signs users in through
// the App (a "user access token" in GitHub's words). GitHub Apps ignore
// scopes: what the token may do is the App's permissions intersected with
// the user's. Exchange codes with ExchangeCode, which uses App's HTTP
// client.
func (a *App) OAuthConfig(redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     a.cfg.ClientID,
		ClientSecret: a.cfg.ClientSecret,
		RedirectURL:  redirectURL,
		Endpoint: oauth2.Endpoint{
			AuthURL:  a.cfg.WebURL + "/login/oauth/authorize",
			TokenURL: a.cfg.WebURL + "/login/oauth/access_token",
			// GitHub documents client_id and client_secret as parameters.
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}
}

// AuthCodeURL is the consent page's address for a sign-in that will come
// back to redirectURL with state, bound to verifier by PKCE (the S256
// code_challenge; make verifier with oauth2.GenerateVerifier and keep it
// for ExchangeCode).
func (a *App) AuthCodeURL(redirectURL, state, verifier string) string {
	return a.OAuthConfig(redirectURL).AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
}

// ExchangeCode trades the code GitHub sent to redirectURL for the user's
// access token, proving with verifier (PKCE) that this is the client that
// started the sign-in: a code intercepted and replayed into another
// sign-in fails.
func (a *App) ExchangeCode(ctx context.Context, redirectURL, code, verifier string) (string, error) {
	if a.cfg.ClientID == "" {
		return "", errors.New("exchange oauth code: no ClientID configured")
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, a.plain)
	if verifier == "" {
		return "", errors.New("exchange oauth code: no PKCE verifier")
	}
	tok, err := a.OAuthConfig(redirectURL).Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", fmt.Errorf("exchange oauth code: %w", err)
	}
	return tok.AccessToken, nil
}

// userClient acts as the user owning token.
func (a *App) userClient(token string) *gh.Client {
	tr := &oauth2.Transport{
		Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}),
		Base:   a.base,
	}
	return a.client(&http.Client{Transport: tr, Timeout: a.plain.Timeout})
}

// User returns the login and ID of the user owning userToken.
func (a *App) User(ctx context.Context, userToken string) (login string, id int64, err error) {
	u, resp, err := a.userClient(userToken).Users.Get(ctx, "")
	if err != nil {
		return "", 0, apiError("get user", resp, err)
	}
	return u.GetLogin(), u.GetID(), nil
}

// UserInstallations lists the App's installations the user can access.
func (a *App) UserInstallations(ctx context.Context, userToken string) ([]Installation, error) {
	c := a.userClient(userToken)
	var out []Installation
	opts := &gh.ListOptions{PerPage: perPage}
	for {
		page, resp, err := c.Apps.ListUserInstallations(ctx, opts)
		if err != nil {
			return nil, apiError("list user installations", resp, err)
		}
		for _, in := range page {
			out = append(out, installationFrom(in))
		}
		if resp.NextPage == 0 {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// UserInstallationRepos lists the repositories of one installation that the
// user can access. ErrNotFound when the installation is not the user's.
func (a *App) UserInstallationRepos(ctx context.Context, userToken string, installationID int64) ([]Repo, error) {
	c := a.userClient(userToken)
	return listRepos(func(opts *gh.ListOptions) (*gh.ListRepositories, *gh.Response, error) {
		return c.Apps.ListUserRepos(ctx, installationID, opts)
	}, fmt.Sprintf("list user repos of installation %d", installationID))
}
