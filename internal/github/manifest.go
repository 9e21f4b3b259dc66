package github

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	gh "github.com/google/go-github/v50/github"
)

// Paths on Velo's public URL that GitHub is told about.
const (
	WebhookPath  = "/webhooks/github"
	CallbackPath = "/auth/github/callback"
	// ManifestRedirectPath receives ?code=… after the user creates the App
	// from the manifest; the code goes to ManifestConversion.
	ManifestRedirectPath = "/setup/github/app"
)

// AppManifest returns the GitHub App manifest for a Velo at publicURL, to be
// posted as the "manifest" form field to WebURL/settings/apps/new (or
// WebURL/organizations/ORG/settings/apps/new).
//
// Events: the App subscribes to "push" and "pull_request" (previews).
// GitHub sends "installation"
// and "installation_repositories" to every App whatever it subscribes to
// (they cannot be chosen), and "ping" when the hook is created, so they are
// not listed. Permissions are the least a deploy needs: read contents
// (tarballs, comparisons), read metadata (mandatory for every App; also
// collaborators' permissions, for fork previews), write deployments, write
// pull requests (the preview comment).
func AppManifest(name, publicURL string) map[string]any {
	publicURL = strings.TrimRight(publicURL, "/")
	return map[string]any{
		"name": name,
		"url":  publicURL,
		"hook_attributes": map[string]any{
			"url":    publicURL + WebhookPath,
			"active": true,
		},
		"redirect_url":             publicURL + ManifestRedirectPath,
		"callback_urls":            []string{publicURL + CallbackPath},
		"request_oauth_on_install": false,
		"public":                   false,
		"default_permissions": map[string]string{
			"contents":      "read",
			"deployments":   "write",
			"metadata":      "read",
			"pull_requests": "write",
		},
		"default_events": []string{"push", "pull_request"},
	}
}

// AppCredentials is what GitHub hands back once an App is created from a
// manifest: everything Config needs.
type AppCredentials struct {
	ID            int64
	Slug          string
	PEM           string
	WebhookSecret string
	ClientID      string
	ClientSecret  string
	HTMLURL       string
}

// Config returns the App configuration for these credentials on the GitHub
// at apiURL and webURL (empty: github.com).
func (c AppCredentials) Config(apiURL, webURL string) Config {
	return Config{
		AppID:         c.ID,
		PrivateKey:    []byte(c.PEM),
		WebhookSecret: []byte(c.WebhookSecret),
		ClientID:      c.ClientID,
		ClientSecret:  c.ClientSecret,
		APIURL:        apiURL,
		WebURL:        webURL,
	}.withDefaults()
}

// ManifestConversion completes the manifest flow: it trades the one-time
// code (valid one hour) for the new App's credentials. The call carries no
// authentication. apiURL empty means github.com; httpClient nil means
// http.DefaultClient.
func ManifestConversion(ctx context.Context, apiURL, code string, httpClient *http.Client) (AppCredentials, error) {
	if apiURL == "" {
		apiURL = DefaultAPIURL
	}
	if !strings.HasSuffix(apiURL, "/") {
		apiURL += "/"
	}
	base, err := url.Parse(apiURL)
	if err != nil {
		return AppCredentials{}, fmt.Errorf("manifest conversion: api url: %w", err)
	}
	c := gh.NewClient(httpClient)
	c.BaseURL = base
	c.UserAgent = userAgent
	ac, resp, err := c.Apps.CompleteAppManifest(ctx, url.PathEscape(code))
	if err != nil {
		return AppCredentials{}, apiError("manifest conversion", resp, err)
	}
	return AppCredentials{
		ID:            ac.GetID(),
		Slug:          ac.GetSlug(),
		PEM:           ac.GetPEM(),
		WebhookSecret: ac.GetWebhookSecret(),
		ClientID:      ac.GetClientID(),
		ClientSecret:  ac.GetClientSecret(),
		HTMLURL:       ac.GetHTMLURL(),
	}, nil
}
