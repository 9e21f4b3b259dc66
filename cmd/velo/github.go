package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/github"
)

// githubEnvFile is where `velo github setup` writes the App's settings,
// read by `velo up` (variables set in the environment win).
const githubEnvFile = "github.env"

// githubEnv returns a getenv that answers from the environment first and
// then from <data>/github.env when that file exists.
func githubEnv(data string, getenv func(string) string) (func(string) string, error) {
	path := filepath.Join(data, githubEnvFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return getenv, nil
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE", path, n)
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		vals[strings.TrimSpace(k)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return vals[k]
	}, nil
}

func githubCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "github",
		Short: "Connect Velo to GitHub",
	}
	cmd.AddCommand(githubSetupCommand())
	return cmd
}

// setupOptions are the flags of velo github setup.
type setupOptions struct {
	data, publicURL, name, org, webURL, apiURL, listen string
	timeout                                            time.Duration
}

func githubSetupCommand() *cobra.Command {
	var o setupOptions
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Create Velo's GitHub App from a manifest and store its credentials",
		Long: `Creates the GitHub App Velo acts as, with GitHub's App Manifest flow: open the
local page it prints, confirm on GitHub, and the App's ID, private key, webhook
secret and OAuth credentials are written to <data>/github/ and <data>/github.env,
which velo up reads. The App's webhook points at --public-url, which GitHub must
be able to reach (a tunnel works for local testing, see docs/github.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return githubSetup(cmd.Context(), cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.data, "data", envOr("VELO_DATA", ".velo"), "data directory velo up uses (VELO_DATA)")
	f.StringVar(&o.publicURL, "public-url", os.Getenv("VELO_PUBLIC_URL"), "URL where GitHub reaches Velo (VELO_PUBLIC_URL), e.g. a tunnel's https URL")
	f.StringVar(&o.name, "name", "", "the App's name on GitHub (default velo-<host>)")
	f.StringVar(&o.org, "org", "", "create the App in this organization instead of your account")
	f.StringVar(&o.webURL, "web-url", envOr(github.EnvWebURL, github.DefaultWebURL), "GitHub web URL ("+github.EnvWebURL+")")
	f.StringVar(&o.apiURL, "api-url", envOr(github.EnvAPIURL, github.DefaultAPIURL), "GitHub API URL ("+github.EnvAPIURL+")")
	f.StringVar(&o.listen, "listen", "127.0.0.1:0", "address of the local setup page")
	f.DurationVar(&o.timeout, "timeout", time.Hour, "how long to wait for the App to be created")
	return cmd
}

var setupPage = template.Must(template.New("setup").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Create Velo's GitHub App</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>Create Velo's GitHub App</h1>
<p>GitHub will ask you to confirm the App <b>{{.Name}}</b>, with its webhook at
<code>{{.Hook}}</code>. It may read code and write deployments.</p>
<form id="f" method="post" action="{{.Action}}">
<input type="hidden" name="manifest" value="{{.Manifest}}">
<button type="submit">Create the App on GitHub</button>
</form>
</body></html>`))

var donePage = template.Must(template.New("done").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Velo's GitHub App is ready</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>The App {{.Slug}} is ready</h1>
<p>Its credentials are in <code>{{.Env}}</code>. Now install it on a repository:
<a href="{{.Install}}">{{.Install}}</a>, then restart <code>velo up</code>.</p>
</body></html>`))

// githubSetup runs the manifest flow: a local page posts the manifest to
// GitHub, GitHub sends the browser back with a code, and the code is
// exchanged for the new App's credentials.
func githubSetup(ctx context.Context, cmd *cobra.Command, o setupOptions) error {
	out := cmd.OutOrStdout()
	if o.publicURL == "" {
		return errors.New("--public-url (or VELO_PUBLIC_URL) is required: the URL where GitHub will reach Velo, like https://velo.example.com")
	}
	if err := checkHTTPURL(o.publicURL); err != nil {
		return fmt.Errorf("--public-url: %w", err)
	}
	if err := checkHTTPURL(o.webURL); err != nil {
		return fmt.Errorf("--web-url: %w", err)
	}
	if o.name == "" {
		host, _ := os.Hostname()
		o.name = "velo-" + strings.ToLower(strings.Split(host, ".")[0])
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.listen, err)
	}
	local := "http://" + ln.Addr().String()
	state := rand.Text()
	m := github.AppManifest(o.name, o.publicURL)
	// GitHub sends the browser back here, not to Velo: the browser runs
	// on this machine, so a loopback address works.
	m["redirect_url"] = local + github.ManifestRedirectPath
	manifest, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	webURL := strings.TrimRight(o.webURL, "/")
	action := webURL + "/settings/apps/new?state=" + state
	if o.org != "" {
		action = webURL + "/organizations/" + o.org + "/settings/apps/new?state=" + state
	}

	type result struct {
		creds github.AppCredentials
		env   string
		err   error
	}
	done := make(chan result, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = setupPage.Execute(w, map[string]string{
			"Name": o.name, "Hook": strings.TrimRight(o.publicURL, "/") + github.WebhookPath,
			"Action": action, "Manifest": string(manifest),
		})
	})
	mux.HandleFunc("GET "+github.ManifestRedirectPath, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
			http.Error(w, "this page did not start the setup (state mismatch)", http.StatusBadRequest)
			return
		}
		creds, err := github.ManifestConversion(r.Context(), o.apiURL, q.Get("code"), &http.Client{Timeout: time.Minute})
		var env string
		if err == nil {
			env, err = writeGitHubCredentials(o, creds)
		}
		if err != nil {
			http.Error(w, "setup failed: "+err.Error(), http.StatusBadGateway)
			select {
			case done <- result{err: err}:
			default:
			}
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = donePage.Execute(w, map[string]string{"Slug": creds.Slug, "Env": env, "Install": installURL(creds, webURL)})
		select {
		case done <- result{creds: creds, env: env}:
		default:
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	fmt.Fprintf(out, "Open %s/ in your browser to create the GitHub App %q.\n", local, o.name)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	select {
	case <-ctx.Done():
		return fmt.Errorf("no App was created within %s", o.timeout)
	case res := <-done:
		if res.err != nil {
			return res.err
		}
		fmt.Fprintf(out, "Created GitHub App %s (ID %d); credentials written to %s\n", res.creds.Slug, res.creds.ID, res.env)
		fmt.Fprintf(out, "Install it on your repositories: %s\n", installURL(res.creds, webURL))
		fmt.Fprintf(out, "Then start Velo: velo up --data %s\n", o.data)
		return nil
	}
}

func checkHTTPURL(s string) error {
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

// installURL is the App's installation page.
func installURL(c github.AppCredentials, webURL string) string {
	if c.HTMLURL != "" {
		return strings.TrimRight(c.HTMLURL, "/") + "/installations/new"
	}
	return webURL + "/apps/" + c.Slug + "/installations/new"
}

// writeGitHubCredentials writes the private key to <data>/github/ and the
// settings to <data>/github.env, both readable by the owner only, and
// returns the env file's path.
func writeGitHubCredentials(o setupOptions, c github.AppCredentials) (string, error) {
	if err := c.Config(o.apiURL, o.webURL).Validate(); err != nil {
		return "", fmt.Errorf("credentials from github: %w", err)
	}
	dir := filepath.Join(o.data, "github")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	keyPath, err := filepath.Abs(filepath.Join(dir, "private-key.pem"))
	if err != nil {
		return "", err
	}
	if err := writePrivate(keyPath, []byte(c.PEM)); err != nil {
		return "", err
	}
	lines := []string{
		"# Written by velo github setup for the GitHub App " + c.Slug + ". Environment variables win.",
		github.EnvAppID + "=" + strconv.FormatInt(c.ID, 10),
		github.EnvPrivateKeyFile + "=" + strconv.Quote(keyPath),
		github.EnvWebhookSecret + "=" + strconv.Quote(c.WebhookSecret),
		github.EnvClientID + "=" + strconv.Quote(c.ClientID),
		github.EnvClientSecret + "=" + strconv.Quote(c.ClientSecret),
		github.EnvAPIURL + "=" + strconv.Quote(o.apiURL),
		github.EnvWebURL + "=" + strconv.Quote(strings.TrimRight(o.webURL, "/")),
		"VELO_PUBLIC_URL=" + strconv.Quote(strings.TrimRight(o.publicURL, "/")),
	}
	env := filepath.Join(o.data, githubEnvFile)
	if err := writePrivate(env, []byte(strings.Join(lines, "\n")+"\n")); err != nil {
		return "", err
	}
	return env, nil
}

// writePrivate writes a file only its owner can read, replacing it
// atomically.
func writePrivate(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
