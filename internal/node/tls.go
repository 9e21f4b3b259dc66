package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/velo-run/velo/internal/certs"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
)

// HTTPSACME is TLS.HTTPS's value for certificates from ACME.
const HTTPSACME = "acme"

// DefaultHTTPSAddr is where TLS is served unless TLS.Addr says otherwise.
const DefaultHTTPSAddr = ":443"

// TLS configures HTTPS for velo up and velo router: certificates from
// ACME (HTTPS "acme") or from files, served on Addr, while the plain HTTP
// address answers ACME challenges and redirects to HTTPS.
type TLS struct {
	// HTTPS is "acme" to obtain and renew certificates with ACME
	// (VELO_HTTPS, --https); empty is off unless CertFile is set.
	HTTPS string
	// Addr is where TLS is served (VELO_HTTPS_ADDR, --https-addr;
	// default DefaultHTTPSAddr).
	Addr string
	// Email and CA are the ACME account's contact and the CA's directory
	// URL (VELO_ACME_EMAIL, VELO_ACME_CA; default Let's Encrypt).
	Email, CA string
	// CARoots, when set, are trusted for the CA's own HTTPS instead of the
	// system's roots (a private CA; tests).
	CARoots *x509.CertPool
	// CertFile and KeyFile are a certificate the operator brings
	// (VELO_TLS_CERT, VELO_TLS_KEY), served instead of ACME.
	CertFile, KeyFile string
	// RenewCheck is how often certificates are checked for renewal
	// (default 10 minutes; tests shorten it).
	RenewCheck time.Duration
	// OnEvent, when set, sees certmagic's events (tests count issuances).
	OnEvent func(event string, data map[string]any)
}

// Enabled reports whether HTTPS is on.
func (t TLS) Enabled() bool { return t.HTTPS != "" || t.CertFile != "" || t.KeyFile != "" }

func (t TLS) validate() error {
	if t.HTTPS != "" && t.HTTPS != HTTPSACME {
		return fmt.Errorf("VELO_HTTPS=%q: want %q (or unset)", t.HTTPS, HTTPSACME)
	}
	if t.HTTPS == HTTPSACME && (t.CertFile != "" || t.KeyFile != "") {
		return errors.New("VELO_HTTPS=acme and VELO_TLS_CERT/VELO_TLS_KEY exclude each other: obtain certificates or bring one")
	}
	if t.Enabled() {
		if _, _, err := net.SplitHostPort(t.addr()); err != nil {
			return fmt.Errorf("--https-addr %q: want host:port, like :443", t.Addr)
		}
	}
	return nil
}

func (t TLS) addr() string {
	if t.Addr == "" {
		return DefaultHTTPSAddr
	}
	return t.Addr
}

// listen opens the HTTPS listener and builds the certificate manager
// for it; plain is the plain HTTP listener (its port is where HTTP-01
// validations arrive). serves decides which names get certificates.
func (t TLS) listen(st *store.Store, keys *secrets.Keyring, plain net.Listener, serves func(string) bool, log *slog.Logger) (net.Listener, *certs.Manager, error) {
	ln, err := net.Listen("tcp", t.addr())
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", t.addr(), err)
	}
	cfg := certs.Config{
		CA: t.CA, Email: t.Email, CARoots: t.CARoots, Serves: serves,
		HTTPPort: port(plain), HTTPSPort: port(ln),
		CertFile: t.CertFile, KeyFile: t.KeyFile,
		RenewCheck: t.RenewCheck, OnEvent: t.OnEvent, Logger: log,
	}
	// With ACME the store keeps the certificates; either way it keeps
	// the session ticket keys every router shares, when there is a
	// keyring to seal them with.
	if t.HTTPS == HTTPSACME || keys != nil {
		if cfg.Storage, err = certs.NewStorage(st, keys, log); err != nil {
			ln.Close()
			return nil, nil, err
		}
	}
	m, err := certs.New(cfg)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	return ln, m, nil
}

func port(ln net.Listener) int {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// withTLS serves plain HTTP with one server and TLS with another, as one.
type withTLS struct {
	plain server
	tls   server // serves ln, terminating TLS
	ln    net.Listener
	certs *certs.Manager
}

// newWithTLS builds the pair: on plain HTTP, ACME challenges and
// redirects (loopback hosts get handler itself), on TLS handler with HSTS.
// With fast set, TLS is served by the router's FastServer: HTTP/1.1
// component calls take its fast path, the rest (and h2) handler.
func newWithTLS(handler http.Handler, ln net.Listener, m *certs.Manager, fast *router.Router, log *slog.Logger) *withTLS {
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	srv := &http.Server{Handler: certs.HTTPSHandler(handler), TLSConfig: m.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: errLog}
	var tls server = tlsServer{srv}
	if fast != nil {
		tls = &router.FastServer{Router: fast, Fallback: srv, TLS: m.TLSConfig(), HSTS: certs.HSTS}
	}
	return &withTLS{
		plain: &http.Server{Handler: m.HTTPHandler(handler), ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: errLog},
		tls:   tls,
		ln:    ln,
		certs: m,
	}
}

// tlsServer is net/http terminating TLS itself (--no-fast-path).
type tlsServer struct{ *http.Server }

func (s tlsServer) Serve(ln net.Listener) error { return s.ServeTLS(ln, "", "") }

func (s *withTLS) Serve(plain net.Listener) error {
	errc := make(chan error, 2)
	go func() { errc <- s.tls.Serve(s.ln) }()
	go func() { errc <- s.plain.Serve(plain) }()
	return <-errc
}

func (s *withTLS) Shutdown(ctx context.Context) error {
	err := errors.Join(s.tls.Shutdown(ctx), s.plain.Shutdown(ctx))
	s.certs.Close()
	return err
}
