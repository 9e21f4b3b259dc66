package github

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/golang-jwt/jwt/v4"
)

// Default endpoints of github.com. GitHub Enterprise Server uses
// https://HOST/api/v3/ and https://HOST.
const (
	DefaultAPIURL = "https://api.github.com/"
	DefaultWebURL = "https://github.com"
)

// Environment variables read by ConfigFromEnv.
const (
	EnvAppID          = "VELO_GITHUB_APP_ID"
	EnvPrivateKeyFile = "VELO_GITHUB_APP_PRIVATE_KEY_FILE"
	EnvWebhookSecret  = "VELO_GITHUB_WEBHOOK_SECRET"
	EnvClientID       = "VELO_GITHUB_CLIENT_ID"
	EnvClientSecret   = "VELO_GITHUB_CLIENT_SECRET"
	EnvAPIURL         = "VELO_GITHUB_API_URL"
	EnvWebURL         = "VELO_GITHUB_WEB_URL"
)

// Config identifies a GitHub App and the GitHub it lives on.
type Config struct {
	// AppID is the App's numeric ID (the "App ID" on its settings page).
	AppID int64
	// PrivateKey is the App's RSA private key, PEM encoded, as GitHub
	// hands it out.
	PrivateKey []byte
	// WebhookSecret signs webhook deliveries (X-Hub-Signature-256).
	WebhookSecret []byte
	// ClientID and ClientSecret enable OAuth sign-in of users. Optional,
	// but both or neither.
	ClientID, ClientSecret string
	// APIURL is the REST API base, default DefaultAPIURL.
	APIURL string
	// WebURL is the web base (OAuth, App settings), default DefaultWebURL.
	WebURL string
}

// withDefaults returns c with empty URLs set to github.com's and the API
// URL ending in a slash, as go-github requires.
func (c Config) withDefaults() Config {
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	if !strings.HasSuffix(c.APIURL, "/") {
		c.APIURL += "/"
	}
	if c.WebURL == "" {
		c.WebURL = DefaultWebURL
	}
	c.WebURL = strings.TrimRight(c.WebURL, "/")
	return c
}

// Validate reports the first field of c that cannot work, by name. Empty
// URLs are valid: they mean github.com.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.AppID <= 0 {
		return errors.New("github config: AppID must be a positive number")
	}
	if len(c.PrivateKey) == 0 {
		return errors.New("github config: PrivateKey is empty")
	}
	if _, err := jwt.ParseRSAPrivateKeyFromPEM(c.PrivateKey); err != nil {
		return fmt.Errorf("github config: PrivateKey: %w", err)
	}
	if len(c.WebhookSecret) == 0 {
		return errors.New("github config: WebhookSecret is empty")
	}
	if (c.ClientID == "") != (c.ClientSecret == "") {
		return errors.New("github config: ClientID and ClientSecret must be set together")
	}
	if err := checkURL(c.APIURL); err != nil {
		return fmt.Errorf("github config: APIURL: %w", err)
	}
	if err := checkURL(c.WebURL); err != nil {
		return fmt.Errorf("github config: WebURL: %w", err)
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not carry a query or fragment", s)
	}
	return nil
}

// ConfigFromEnv reads the VELO_GITHUB_* variables through getenv (os.Getenv
// in production). The private key is read from the file named by
// VELO_GITHUB_APP_PRIVATE_KEY_FILE. ok is false, with no error, when none of
// the App's credentials (ID, key file, webhook secret, client ID or secret)
// is set: GitHub integration is then simply off. When some are set the
// result is validated and errors name the variable or field at fault.
func ConfigFromEnv(getenv func(string) string) (cfg Config, ok bool, err error) {
	present := false
	for _, k := range []string{EnvAppID, EnvPrivateKeyFile, EnvWebhookSecret, EnvClientID, EnvClientSecret} {
		if getenv(k) != "" {
			present = true
		}
	}
	if !present {
		return Config{}, false, nil
	}
	if s := getenv(EnvAppID); s != "" {
		id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return Config{}, true, fmt.Errorf("%s: %q is not a number", EnvAppID, s)
		}
		cfg.AppID = id
	}
	if path := getenv(EnvPrivateKeyFile); path != "" {
		key, err := os.ReadFile(path)
		if err != nil {
			return Config{}, true, fmt.Errorf("%s: %w", EnvPrivateKeyFile, err)
		}
		cfg.PrivateKey = key
	}
	cfg.WebhookSecret = []byte(getenv(EnvWebhookSecret))
	cfg.ClientID = getenv(EnvClientID)
	cfg.ClientSecret = getenv(EnvClientSecret)
	cfg.APIURL = getenv(EnvAPIURL)
	cfg.WebURL = getenv(EnvWebURL)
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, true, err
	}
	return cfg, true, nil
}
