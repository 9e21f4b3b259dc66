package webui

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/auth"
)

// flashes are the messages an action's redirect may ask for (?done=…);
// fixed, so a link cannot make the page say anything else.
var flashes = map[string]string{
	"paused":         "Paused: its URL answers 503 until you resume it.",
	"resumed":        "Resumed: it serves requests again.",
	"rollback":       "Rollback started: the earlier deployment goes live once it is prepared.",
	"deleted":        "Component deleted.",
	"started":        "Deployment started: it goes live once it is built.",
	"revoked":        "Token revoked: it no longer works, also for log streams it opened.",
	"secret-set":     "Secret set: the component's instances restart with it within seconds.",
	"secret-removed": "Secret removed: the component's instances restart without it within seconds.",
	"replayed":       "Replayed: the call is queued again (a dead one gets one more attempt).",
	"discarded":      "Discarded: the call is dropped from the queue.",
}

type signinPage struct {
	base
	GitHub   bool
	Admin    bool
	OneClick bool
	// TokenFile is where velo up keeps the admin token.
	TokenFile string
	Failed    bool
}

func (u *UI) signin(w http.ResponseWriter, r *http.Request, status int) {
	u.render(w, status, "signin", signinPage{
		base:      base{Title: "Sign in"},
		GitHub:    u.cfg.Sessions.GitHubSignIn(),
		Admin:     u.cfg.Sessions.AdminSignIn(),
		OneClick:  u.cfg.OneClick,
		TokenFile: u.cfg.TokenFile,
		Failed:    r.URL.Query().Get("signin") == "failed",
	})
}

// index is the sign-in page for strangers, the components list for
// everyone else.
func (u *UI) index(w http.ResponseWriter, r *http.Request) {
	if _, ok := u.cfg.Sessions.User(r); !ok {
		u.signin(w, r, http.StatusOK)
		return
	}
	u.signedIn(u.list)(w, r)
}

// listItem is one row of the components list.
type listItem struct {
	api.Component
	Hits  int64
	Spark spark
	// Previews are the component's pull request previews (NAME--pr-N),
	// shown under it; PR is the number of the pull request an item
	// previews (0: not a preview).
	Previews []listItem
	PR       int
}

// previewSep separates a component's name from a pull request's number in
// the name of its preview (deploymgr names them NAME--pr-N).
const previewSep = "--pr-"

// groupPreviews puts each preview under the component it previews, when
// that is in the list, ordered by pull request number.
func groupPreviews(items []listItem) []listItem {
	index := map[string]int{}
	var out []listItem
	var previews []listItem
	for _, it := range items {
		i := strings.LastIndex(it.Name, previewSep)
		if n, err := strconv.Atoi(it.Name[i+len(previewSep):]); i > 0 && err == nil && n > 0 {
			it.PR = n
			previews = append(previews, it)
			continue
		}
		index[it.Name] = len(out)
		out = append(out, it)
	}
	slices.SortStableFunc(previews, func(a, b listItem) int { return a.PR - b.PR })
	for _, pv := range previews {
		if i, ok := index[pv.Name[:strings.LastIndex(pv.Name, previewSep)]]; ok {
			out[i].Previews = append(out[i].Previews, pv)
		} else {
			out = append(out, pv)
		}
	}
	return out
}

type listPage struct {
	base
	Components []listItem
	Onboard    onboard
}

func (u *UI) list(w http.ResponseWriter, r *http.Request, v visitor) {
	var comps []api.Component
	if err := u.call(r, http.MethodGet, "/api/v1/components", "", nil, &comps); err != nil {
		u.failAPI(w, r, err)
		return
	}
	p := listPage{base: base{Title: "Components", visitor: v, Flash: flashes[r.URL.Query().Get("done")]}}
	for _, c := range comps {
		var st api.Stats
		if err := u.call(r, http.MethodGet, componentPath(c.Name, "/stats?since=1h"), "", nil, &st); err != nil {
			u.failAPI(w, r, err)
			return
		}
		p.Components = append(p.Components, listItem{Component: c, Hits: st.Hits, Spark: sparkline(st.Buckets)})
	}
	p.Components = groupPreviews(p.Components)
	if len(comps) == 0 {
		p.Onboard = u.onboard(r, v)
	}
	u.render(w, http.StatusOK, "list", p)
}

// onboard is what the onboarding section shows.
type onboard struct {
	CSRF     string
	GitHub   bool
	Repos    []api.Repo
	RepoErr  string
	Server   string
	Admin    bool
	TokenCmd string
}

// onboard lists what the visitor can start: GET /api/v1/repos, 404 when
// GitHub is not configured.
func (u *UI) onboard(r *http.Request, v visitor) onboard {
	o := onboard{CSRF: v.CSRF, GitHub: true, Server: u.cfg.PublicURL, Admin: v.User == auth.AdminUser}
	if u.cfg.TokenFile != "" {
		o.TokenCmd = "export VELO_TOKEN=$(cat " + u.cfg.TokenFile + ")"
	}
	err := u.call(r, http.MethodGet, "/api/v1/repos", "", nil, &o.Repos)
	var ae *apiError
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		o.GitHub = false
	case err != nil:
		u.log.Warn("list repositories for onboarding failed", "user", v.User, "err", err)
		o.RepoErr = "GitHub did not answer; reload in a moment."
	}
	return o
}

type newPage struct {
	base
	Onboard onboard
}

func (u *UI) onboarding(w http.ResponseWriter, r *http.Request, v visitor) {
	u.render(w, http.StatusOK, "new", newPage{base: base{Title: "Add a component", visitor: v}, Onboard: u.onboard(r, v)})
}

// envVar is one variable of the live manifest's [env].
type envVar struct{ Key, Value string }

type componentPage struct {
	base
	C           api.Component
	Deployments []api.Deployment
	Range       string // 1h | 24h
	Stats       api.Stats
	Hits        chart
	Latency     chart
	Logs        []api.LogLine
	LastLog     int64
	Env         []envVar
	Secrets     []api.Secret // names and times only: the API never gives values
	// Dead and Recent are the component's dead queued calls and its
	// newest ones (only when the server runs the event engine).
	Dead, Recent []api.Invocation
	Snippet      string
}

func (u *UI) component(w http.ResponseWriter, r *http.Request, v visitor) {
	name := r.PathValue("name")
	p := componentPage{base: base{Title: name, visitor: v, Flash: flashes[r.URL.Query().Get("done")]}, Range: "1h"}
	since := "1h"
	if r.URL.Query().Get("range") == "24h" {
		p.Range, since = "24h", "1d"
	}
	// The component first: a component the visitor cannot reach is not
	// found, and nothing else is read.
	if err := u.call(r, http.MethodGet, componentPath(name, ""), "", nil, &p.C); err != nil {
		u.failAPI(w, r, err)
		return
	}
	for _, step := range []struct {
		path string
		out  any
	}{
		{componentPath(name, "/deployments?limit=50"), &p.Deployments},
		{componentPath(name, "/stats?since="+since), &p.Stats},
		{componentPath(name, "/logs?tail=100"), &p.Logs},
		{componentPath(name, "/secrets"), &p.Secrets},
	} {
		if err := u.call(r, http.MethodGet, step.path, "", nil, step.out); err != nil {
			u.failAPI(w, r, err)
			return
		}
	}
	if err := u.componentEvents(r, &p); err != nil {
		u.failAPI(w, r, err)
		return
	}
	p.Hits, p.Latency = hitsChart(p.Stats.Buckets), latencyChart(p.Stats.Buckets)
	if n := len(p.Logs); n > 0 {
		p.LastLog = p.Logs[n-1].ID
	}
	if p.C.Live != nil {
		// The live deployment's manifest environment, shown as the API
		// shows it.
		var live api.Deployment
		if err := u.call(r, http.MethodGet, "/api/v1/deployments/"+strconv.FormatInt(p.C.Live.ID, 10), "", nil, &live); err != nil {
			u.failAPI(w, r, err)
			return
		}
		for k, val := range live.Env {
			p.Env = append(p.Env, envVar{Key: k, Value: val})
		}
		slices.SortFunc(p.Env, func(a, b envVar) int { return strings.Compare(a.Key, b.Key) })
	}
	p.Snippet = u.snippet(v, name)
	u.render(w, http.StatusOK, "component", p)
}

// snippet is the shell to deploy a new version of name with the CLI.
func (u *UI) snippet(v visitor, name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "export VELO_SERVER=%s\n", u.cfg.PublicURL)
	if v.User == auth.AdminUser && u.cfg.TokenFile != "" {
		fmt.Fprintf(&b, "export VELO_TOKEN=$(cat %s)\n", u.cfg.TokenFile)
	} else {
		b.WriteString("export VELO_TOKEN=…   # create one below: “Create a CLI token”\n")
	}
	fmt.Fprintf(&b, "velo deploy --name %s .   # in the directory with its velo.toml", name)
	return b.String()
}

type deploymentPage struct {
	base
	Name string
	D    api.Deployment
}

// componentItem reads what /components/{name}/KIND/{id} shows — the API's
// /api/v1/KINDs/{id} into out — and refuses (404, said) a bad id or one of
// another component than the path names; ok is false once it answered.
func (u *UI) componentItem(w http.ResponseWriter, r *http.Request, kind string, out any, component func() string) (name string, id int64, ok bool) {
	name = r.PathValue("name")
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		u.fail(w, r, http.StatusNotFound, "There is no such "+kind+".")
		return name, id, false
	}
	if err := u.call(r, http.MethodGet, "/api/v1/"+kind+"s/"+strconv.FormatInt(id, 10), "", nil, out); err != nil {
		u.failAPI(w, r, err)
		return name, id, false
	}
	if component() != name {
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("Not found: component %q has no %s %d.", name, kind, id))
		return name, id, false
	}
	return name, id, true
}

func (u *UI) deployment(w http.ResponseWriter, r *http.Request, v visitor) {
	var d api.Deployment
	name, id, ok := u.componentItem(w, r, "deployment", &d, func() string { return d.Component })
	if !ok {
		return
	}
	u.render(w, http.StatusOK, "deployment", deploymentPage{base: base{Title: fmt.Sprintf("%s #%d", name, id), visitor: v}, Name: name, D: d})
}

// checkForm reads a posted form and checks its CSRF token; the API checks
// it again on the call the action makes.
func (u *UI) checkForm(w http.ResponseWriter, r *http.Request) (string, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	tok := r.PostFormValue(auth.CSRFField)
	if !u.cfg.Sessions.ValidCSRF(r, tok) {
		u.fail(w, r, http.StatusForbidden, "This form expired or was not sent from the dashboard. Go back, reload the page and try again.")
		return "", false
	}
	return tok, true
}

// act serves the component page's buttons: pause, resume, rollback, delete.
func (u *UI) act(w http.ResponseWriter, r *http.Request, v visitor) {
	csrf, ok := u.checkForm(w, r)
	if !ok {
		return
	}
	name, action := r.PathValue("name"), r.PathValue("action")
	back := "/components/" + url.PathEscape(name)
	var err error
	switch action {
	case "pause", "resume":
		err = u.call(r, http.MethodPost, componentPath(name, "/"+action), csrf, nil, nil)
		action += "d"
	case "rollback":
		var req api.Rollback
		if s := r.PostFormValue("deployment"); s != "" {
			if req.Deployment, err = strconv.ParseInt(s, 10, 64); err != nil {
				u.fail(w, r, http.StatusBadRequest, "The deployment to roll back to is not a number.")
				return
			}
		}
		err = u.call(r, http.MethodPost, componentPath(name, "/rollback"), csrf, req, nil)
	case "set-secret":
		// The value goes to the API as the request body, as is; it is
		// never put in a redirect, a flash or the page.
		// The form always says whether previews get the secret.
		key := r.PostFormValue("key")
		preview := strconv.FormatBool(r.PostFormValue("preview") == "true")
		err = u.call(r, http.MethodPut, componentPath(name, "/secrets/"+url.PathEscape(key))+"?preview="+preview, csrf, rawBody(r.PostFormValue("value")), nil)
		action = "secret-set"
	case "remove-secret":
		err = u.call(r, http.MethodDelete, componentPath(name, "/secrets/"+url.PathEscape(r.PostFormValue("key"))), csrf, nil, nil)
		action = "secret-removed"
	case "delete":
		if r.PostFormValue("confirm") != name {
			u.fail(w, r, http.StatusBadRequest, fmt.Sprintf("Not deleted: type the component's name, %s, to confirm.", name))
			return
		}
		err = u.call(r, http.MethodDelete, componentPath(name, ""), csrf, nil, nil)
		action, back = "deleted", "/"
	default:
		u.fail(w, r, http.StatusNotFound, "There is no such action.")
		return
	}
	if err != nil {
		u.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, back+"?done="+action, http.StatusSeeOther)
}

// start serves the onboarding page's Start buttons.
func (u *UI) start(w http.ResponseWriter, r *http.Request, v visitor) {
	csrf, ok := u.checkForm(w, r)
	if !ok {
		return
	}
	var d api.Deployment
	if err := u.call(r, http.MethodPost, "/api/v1/components", csrf, api.Start{Repo: r.PostFormValue("repo")}, &d); err != nil {
		u.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/components/"+url.PathEscape(d.Component)+"?done=started", http.StatusSeeOther)
}

type tokenPage struct {
	base
	Token   api.Token
	Snippet string
}

// token creates an API token acting as the visitor, shown once.
func (u *UI) token(w http.ResponseWriter, r *http.Request, v visitor) {
	csrf, ok := u.checkForm(w, r)
	if !ok {
		return
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	var t api.Token
	if err := u.call(r, http.MethodPost, "/api/v1/tokens", csrf, api.TokenRequest{Name: name}, &t); err != nil {
		u.failAPI(w, r, err)
		return
	}
	u.render(w, http.StatusOK, "token", tokenPage{
		base:    base{Title: "API token", visitor: v},
		Token:   t,
		Snippet: fmt.Sprintf("export VELO_SERVER=%s\nexport VELO_TOKEN=%s", u.cfg.PublicURL, t.Token),
	})
}

type tokensPage struct {
	base
	Tokens []api.Token
}

// tokens lists the visitor's API tokens (the admin's: everyone's), with
// Revoke buttons; never a secret.
func (u *UI) tokens(w http.ResponseWriter, r *http.Request, v visitor) {
	var ts []api.Token
	if err := u.call(r, http.MethodGet, "/api/v1/tokens", "", nil, &ts); err != nil {
		u.failAPI(w, r, err)
		return
	}
	u.render(w, http.StatusOK, "tokens", tokensPage{base: base{Title: "API tokens", visitor: v, Flash: flashes[r.URL.Query().Get("done")]}, Tokens: ts})
}

// revokeToken serves the tokens page's Revoke buttons.
func (u *UI) revokeToken(w http.ResponseWriter, r *http.Request, v visitor) {
	csrf, ok := u.checkForm(w, r)
	if !ok {
		return
	}
	if err := u.call(r, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(r.PathValue("id")), csrf, nil, nil); err != nil {
		u.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/tokens?done=revoked", http.StatusSeeOther)
}
