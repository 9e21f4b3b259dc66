package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// LetsEncrypt is the ACME directory used when Config.CA is empty.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// HSTS is the Strict-Transport-Security value on HTTPS answers: browsers
// that saw it use HTTPS for the host for two years.
const HSTS = "max-age=63072000"

// Config configures a Manager: either ACME (Storage set) or a certificate
// the operator brings (CertFile and KeyFile).
type Config struct {
	// Storage keeps certificates and the ACME account (ACME), and the
	// session ticket keys every router on the store shares (both ways;
	// without it each process has its own, and a client resumes only
	// with the router that issued its ticket).
	Storage *Storage
	// CA is the ACME directory URL (VELO_ACME_CA; default Let's Encrypt).
	CA string
	// Email is the ACME account's contact (VELO_ACME_EMAIL), where the CA
	// writes about expiring certificates; may be empty.
	Email string
	// CARoots, when set, are the roots trusted for the CA's own HTTPS
	// endpoint instead of the system's (a private or test CA).
	CARoots *x509.CertPool
	// Serves reports whether Velo serves host: the only names a
	// certificate is obtained for. Required for ACME.
	Serves func(host string) bool
	// HTTPPort and HTTPSPort are the ports Velo listens on for plain HTTP
	// and for TLS: where the CA's HTTP-01 and TLS-ALPN-01 validations
	// arrive (so certmagic never opens listeners of its own) and where
	// redirects point. 0 means 80 and 443.
	HTTPPort, HTTPSPort int
	// CertFile and KeyFile are a PEM certificate chain and its key
	// (VELO_TLS_CERT, VELO_TLS_KEY), served for every name instead of ACME.
	CertFile, KeyFile string
	// RenewCheck is how often certificates are checked for renewal
	// (default certmagic's, 10 minutes); tests with short-lived
	// certificates shorten it.
	RenewCheck time.Duration
	// OnEvent, when set, sees certmagic's events ("cert_obtaining",
	// "cert_obtained", "cert_failed", …) with their data.
	OnEvent func(event string, data map[string]any)
	Logger  *slog.Logger
}

// Manager serves TLS certificates and the plain-HTTP side of HTTPS.
type Manager struct {
	cfg     Config
	tls     *tls.Config
	cache   *certmagic.Cache // nil with a certificate from files
	issuer  *certmagic.ACMEIssuer
	tickets *Tickets // nil without Storage
}

// New returns a Manager. With ACME, nothing is obtained yet: a
// certificate is obtained (or loaded from the store) at the first TLS
// handshake for a name Velo serves, then renewed in the background.
func New(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 80
	}
	if cfg.HTTPSPort == 0 {
		cfg.HTTPSPort = 443
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		m, err := fromFiles(cfg)
		if err != nil {
			return nil, err
		}
		return m, m.shareTickets()
	}
	if cfg.Storage == nil || cfg.Serves == nil {
		return nil, errors.New("tls: ACME needs the store and the hosts Velo serves")
	}
	if cfg.CA == "" {
		cfg.CA = LetsEncrypt
	}
	log := zapLogger(cfg.Logger)
	var mc *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return mc, nil },
		RenewCheckInterval: cfg.RenewCheck,
		Logger:             log,
	})
	mc = certmagic.New(cache, certmagic.Config{
		Storage: cfg.Storage,
		Logger:  log,
		OnDemand: &certmagic.OnDemandConfig{DecisionFunc: func(_ context.Context, name string) error {
			if !cfg.Serves(name) {
				return fmt.Errorf("no certificate for %q: not a host Velo serves", name)
			}
			return nil
		}},
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			if cfg.OnEvent != nil {
				cfg.OnEvent(event, data)
			}
			return nil
		},
	})
	issuer := certmagic.NewACMEIssuer(mc, certmagic.ACMEIssuer{
		CA:             cfg.CA,
		Email:          cfg.Email,
		Agreed:         true,
		TrustedRoots:   cfg.CARoots,
		AltHTTPPort:    cfg.HTTPPort,
		AltTLSALPNPort: cfg.HTTPSPort,
		Logger:         log,
	})
	mc.Issuers = []certmagic.Issuer{issuer}
	tc := mc.TLSConfig()
	tc.NextProtos = append([]string{"h2", "http/1.1"}, tc.NextProtos...)
	tc.MinVersion = tls.VersionTLS12
	m := &Manager{cfg: cfg, tls: tc, cache: cache, issuer: issuer}
	if err := m.shareTickets(); err != nil {
		cache.Stop()
		return nil, err
	}
	return m, nil
}

// shareTickets serves session tickets with the keys in the store.
func (m *Manager) shareTickets() error {
	if m.cfg.Storage == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t, err := ShareTickets(ctx, m.tls, m.cfg.Storage, m.cfg.Logger)
	if err != nil {
		return fmt.Errorf("tls: session ticket keys: %w", err)
	}
	m.tickets = t
	return nil
}

// fromFiles serves one certificate the operator brings, for every name.
func fromFiles(cfg Config) (*Manager, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tls: VELO_TLS_CERT and VELO_TLS_KEY go together: a certificate and its key")
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	return &Manager{cfg: cfg, tls: &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}}, nil
}

// TLSConfig is the configuration to serve TLS with; it must not be
// changed.
func (m *Manager) TLSConfig() *tls.Config { return m.tls }

// Close stops renewing; at shutdown.
func (m *Manager) Close() {
	if m.tickets != nil {
		m.tickets.Stop()
	}
	if m.cache != nil {
		m.cache.Stop()
	}
	if m.cfg.Storage != nil {
		m.cfg.Storage.Close()
	}
}

// HTTPSHandler wraps the handler of TLS connections: every answer carries HSTS.
func HTTPSHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", HSTS)
		next.ServeHTTP(w, r)
	})
}

// HTTPHandler serves plain HTTP when Velo serves HTTPS: the CA's HTTP-01
// challenges (of this router or any other sharing the store) are
// answered, and every other request is redirected to HTTPS (308, so that
// a POST stays a POST). Requests for localhost or a loopback address go
// to local (the CLI and health checks on the machine itself), since no
// certificate can be had for them.
func (m *Manager) HTTPHandler(local http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.issuer != nil && m.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(host)
		if isLocal(host) {
			local.ServeHTTP(w, r)
			return
		}
		if certmagic.LooksLikeHTTPChallenge(r) {
			http.NotFound(w, r) // a challenge nobody started
			return
		}
		if !validHost(host) {
			http.Error(w, "bad request: no valid host to redirect to", http.StatusBadRequest)
			return
		}
		target := "https://" + host
		if strings.Contains(host, ":") {
			target = "https://[" + strings.Trim(host, "[]") + "]"
		}
		if m.cfg.HTTPSPort != 443 {
			target += ":" + strconv.Itoa(m.cfg.HTTPSPort)
		}
		target += r.URL.RequestURI()
		w.Header().Set("Location", target)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusPermanentRedirect)
		fmt.Fprintln(w, "use "+target)
	})
}

func isLocal(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsLoopback()
}

// validHost accepts a DNS name or an IP address, nothing that could make
// the Location point elsewhere than the host asked for.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return true
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
