package webui

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/auth"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures the dashboard.
type Config struct {
	// API is the REST API (deploymgr.Manager.Handler()), called in-process
	// with the visitor's session cookie. Required.
	API http.Handler
	// Sessions signs visitors in and tells who they are. Required.
	Sessions *auth.Sessions
	// PublicURL is where users reach Velo (for the `velo deploy` snippet).
	PublicURL string
	// OneClick says the process printed a one-click sign-in link (velo up).
	OneClick bool
	// TokenFile is where the admin token is kept, for the snippet
	// (velo up: <data>/admin.token); empty when unknown.
	TokenFile string
	Logger    *slog.Logger
}

// UI serves the dashboard. Safe for concurrent use.
type UI struct {
	cfg    Config
	log    *slog.Logger
	pages  map[string]*template.Template
	static http.Handler
}

// New returns the dashboard for cfg.
func New(cfg Config) (*UI, error) {
	if cfg.API == nil || cfg.Sessions == nil {
		return nil, errors.New("webui: API and Sessions are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	u := &UI{cfg: cfg, log: cfg.Logger, pages: map[string]*template.Template{}}
	for _, name := range []string{"signin", "list", "component", "deployment", "new", "token", "tokens", "error", "api", "invocation"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("webui: template %s: %w", name, err)
		}
		u.pages[name] = t
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	u.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	return u, nil
}

// Handler serves every dashboard page, form action and static file, each
// with the security headers.
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", u.index)
	mux.HandleFunc("GET /new", u.signedIn(u.onboarding))
	mux.HandleFunc("GET /components/{name}", u.signedIn(u.component))
	mux.HandleFunc("GET /components/{name}/deployments/{id}", u.signedIn(u.deployment))
	mux.HandleFunc("GET /components/{name}/api", u.signedIn(u.apiDoc))
	mux.HandleFunc("POST /components/{name}/{action}", u.signedIn(u.act))
	mux.HandleFunc("GET /components/{name}/invocations/{id}", u.signedIn(u.invocation))
	mux.HandleFunc("POST /components/{name}/invocations/{id}/{action}", u.signedIn(u.invocationAct))
	mux.HandleFunc("POST /start", u.signedIn(u.start))
	mux.HandleFunc("GET /tokens", u.signedIn(u.tokens))
	mux.HandleFunc("POST /tokens", u.signedIn(u.token))
	mux.HandleFunc("POST /tokens/{id}/revoke", u.signedIn(u.revokeToken))
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		u.static.ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := u.cfg.Sessions.User(r); !ok {
			u.signin(w, r, http.StatusUnauthorized)
			return
		}
		u.fail(w, r, http.StatusNotFound, "There is no such page.")
	})
	return securityHeaders(mux)
}

// contentSecurityPolicy allows only this origin's own files: no inline
// script or style, no framing, forms post only here.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// visitor is who is looking at a page.
type visitor struct {
	User    string // Velo user: "admin" or "github:login"
	Display string // what the header shows
	CSRF    string
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, v visitor)

// signedIn runs h for signed-in visitors; everyone else gets the sign-in
// page and nothing else.
func (u *UI) signedIn(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, ok := u.cfg.Sessions.User(r)
		if !ok {
			u.signin(w, r, http.StatusUnauthorized)
			return
		}
		v := visitor{User: user, Display: user, CSRF: u.cfg.Sessions.CSRFToken(r)}
		if login, ok := auth.GitHubLogin(user); ok {
			v.Display = login
		}
		h(w, r, v)
	}
}

// base is what the layout shows on every page.
type base struct {
	Title string
	visitor
	Flash string
}

func (u *UI) render(w http.ResponseWriter, status int, page string, data any) {
	var buf bytes.Buffer
	if err := u.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		u.log.Error("render page failed", "page", page, "err", err)
		http.Error(w, "could not render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

type errorPage struct {
	base
	Status  int
	Message string
	Back    string
}

// fail shows message on an error page with status.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, status int, message string) {
	user, _ := u.cfg.Sessions.User(r)
	v := visitor{User: user, Display: strings.TrimPrefix(user, "github:"), CSRF: u.cfg.Sessions.CSRFToken(r)}
	u.render(w, status, "error", errorPage{base: base{Title: http.StatusText(status), visitor: v}, Status: status, Message: message, Back: "/"})
}

// failAPI shows an error the API answered, or logs an internal one.
func (u *UI) failAPI(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		msg := ae.Msg
		if ae.Status == http.StatusNotFound {
			msg = "Not found: " + msg
		}
		u.fail(w, r, ae.Status, msg)
		return
	}
	u.log.Error("dashboard request failed", "path", r.URL.Path, "err", err)
	u.fail(w, r, http.StatusInternalServerError, "Something went wrong on the server; the log has the details.")
}

// apiError is an error answer of the REST API.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("API %d: %s", e.Status, e.Msg) }

// call runs one REST API request in-process as the visitor: with their
// session cookie and, for actions, the CSRF token they submitted. The API
// decides what they may see and do.
func (u *UI) call(r *http.Request, method, path, csrf string, body, out any) error {
	var rd io.Reader
	contentType := "application/json"
	if raw, ok := body.(rawBody); ok {
		rd, contentType = strings.NewReader(string(raw)), "text/plain; charset=utf-8"
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, rd)
	if err != nil {
		return err
	}
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.TLS = r.TLS // the session cookie's name depends on it
	if c, err := r.Cookie(u.cfg.Sessions.SessionCookieName(r)); err == nil {
		req.AddCookie(c)
	}
	if csrf != "" {
		req.Header.Set(auth.CSRFHeader, csrf)
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	u.cfg.API.ServeHTTP(rec, req)
	if rec.status/100 != 2 {
		var e api.Error
		if json.Unmarshal(rec.body.Bytes(), &e) != nil || e.Error == "" {
			e.Error = http.StatusText(rec.status)
		}
		return &apiError{Status: rec.status, Msg: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return nil
}

// rawBody is a call's body sent as it is, not as JSON (a secret's value).
type rawBody string

// recorder captures an in-process API response.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}

// componentPath is the API path of component name, plus rest.
func componentPath(name, rest string) string {
	return "/api/v1/components/" + url.PathEscape(name) + rest
}

// ago says how long ago t was, roughly.
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case t.IsZero():
		return ""
	case d < 10*time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

// short is a commit's short sha.
func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// subject is the first line of a commit message, at most 80 characters.
func subject(msg string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	if r := []rune(line); len(r) > 80 {
		return string(r[:79]) + "…"
	}
	return line
}

// count writes n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

var funcs = template.FuncMap{
	"ago":     ago,
	"short":   short,
	"subject": subject,
	"count":   count,
	"utc":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"clock":   func(t time.Time) string { return t.UTC().Format("15:04:05") },
	"ms":      ms,
	"until":   until,
}
