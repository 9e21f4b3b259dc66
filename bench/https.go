package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/pgtest"
)

// httpsSection measures TLS termination: `velo router` with a certificate
// from files (VELO_TLS_CERT/KEY) against nginx terminating TLS with the
// same certificate, both forwarding to the same static backend, with wrk
// over keep-alive connections (32); then full and resumed handshakes per
// second against each, from a small Go client.
func httpsSection(ctx context.Context, b *Bench) (string, error) {
	velo, err := b.GoBuild(ctx, "./cmd/velo")
	if err != nil {
		return "", err
	}
	server, stopPG, err := pgtest.Throwaway()
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	defer stopPG()
	db := strings.Replace(server, "/postgres?", "/velo_bench?", 1)
	if err := createDatabase(ctx, server, "velo_bench"); err != nil {
		return "", err
	}
	backendURL, stopBackend, _, err := startNginx(ctx, b.Tmp, "https-backend",
		`location / { default_type text/plain; return 200 "Hello, world\n"; }`, "")
	if err != nil {
		return "", err
	}
	defer stopBackend()
	if err := seedStaticRoute(ctx, db, backendURL); err != nil {
		return "", err
	}
	const host = "bench.velo.test"
	roots, certFile, keyFile, err := benchCert(b.Tmp, host)
	if err != nil {
		return "", err
	}

	// nginx: the same server block listens plain (for its readiness
	// check) and with TLS.
	nginxTLS, err := freeAddr()
	if err != nil {
		return "", err
	}
	_, stopNginx, nginxPid, err := startNginx(ctx, b.Tmp, "nginx-tls", fmt.Sprintf(`listen %s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }`, nginxTLS, certFile, keyFile),
		fmt.Sprintf("upstream backend { server %s; keepalive 64; keepalive_requests 1000000; }", strings.TrimPrefix(backendURL, "http://")))
	if err != nil {
		return "", err
	}
	defer stopNginx()

	veloTLS, stopVelo, veloPid, err := startVeloTLSRouter(ctx, b, velo, db, certFile, keyFile, roots, host)
	if err != nil {
		return "", err
	}
	defer stopVelo()
	// The same router held to one core and one event loop, as nginx has
	// one worker process.
	oneTLS, stopOne, onePid, err := startVeloTLSRouter(ctx, b, velo, db, certFile, keyFile, roots, host, "GOMAXPROCS=1")
	if err != nil {
		return "", err
	}
	defer stopOne()

	type target struct {
		name, addr      string
		pid             int
		rps             []float64
		p50, p99        []time.Duration
		cpu             []time.Duration
		full, resumed   []float64
		bad, hsBad      int64
		fullCPU, resCPU []time.Duration
	}
	targets := []*target{{name: "nginx", addr: nginxTLS, pid: nginxPid}, {name: "velo router", addr: veloTLS, pid: veloPid},
		{name: "velo 1 core", addr: oneTLS, pid: onePid}}
	for _, t := range targets {
		if _, err := b.Wrk(ctx, "https://"+t.addr+"/fn/bench/", 2, 32, 2*time.Second); err != nil {
			return "", fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for round := 1; round <= b.Rounds; round++ {
		for _, t := range targets {
			cpu0 := cpuTime(t.pid)
			r, err := b.Wrk(ctx, "https://"+t.addr+"/fn/bench/", 2, 32, b.Duration)
			if err != nil {
				return "", fmt.Errorf("%s: %w", t.name, err)
			}
			t.rps, t.p50, t.p99 = append(t.rps, r.rps), append(t.p50, r.p50), append(t.p99, r.p99)
			if r.requests > 0 {
				t.cpu = append(t.cpu, (cpuTime(t.pid)-cpu0)/time.Duration(r.requests))
			}
			t.bad += r.non2xx + r.socketErrors
			if t.name == "velo 1 core" {
				b.logf("https round %d: %-12s %8.0f req/s p50 %v p99 %v", round, t.name, r.rps, r.p50, r.p99)
				continue // throughput and latency only
			}
			for _, resume := range []bool{false, true} {
				cpu0 := cpuTime(t.pid)
				n, errs, first := handshakes(ctx, t.addr, host, roots, resume, 8, b.Duration/2)
				t.hsBad += errs
				if errs > 0 {
					b.logf("https: %s: %d handshakes failed (resume %v), the first: %s", t.name, errs, resume, first)
				}
				perSec := float64(n) / (b.Duration / 2).Seconds()
				var perHS time.Duration
				if n > 0 {
					perHS = (cpuTime(t.pid) - cpu0) / time.Duration(n)
				}
				if resume {
					t.resumed, t.resCPU = append(t.resumed, perSec), append(t.resCPU, perHS)
				} else {
					t.full, t.fullCPU = append(t.full, perSec), append(t.fullCPU, perHS)
				}
			}
			b.logf("https round %d: %-12s %8.0f req/s p50 %v p99 %v; handshakes/s full %.0f resumed %.0f", round, t.name, r.rps, r.p50, r.p99,
				t.full[len(t.full)-1], t.resumed[len(t.resumed)-1])
		}
	}
	ng, vr, one := targets[0], targets[1], targets[2]
	var ratios, oneR, fullR, resR []float64
	var p50d, p99d, oneP99d []time.Duration
	for i := range ng.rps {
		ratios = append(ratios, vr.rps[i]/ng.rps[i])
		oneR = append(oneR, one.rps[i]/ng.rps[i])
		oneP99d = append(oneP99d, one.p99[i]-ng.p99[i])
		fullR = append(fullR, vr.full[i]/ng.full[i])
		resR = append(resR, vr.resumed[i]/ng.resumed[i])
		p50d = append(p50d, vr.p50[i]-ng.p50[i])
		p99d = append(p99d, vr.p99[i]-ng.p99[i])
	}
	t := b.newTable("")
	ratio := median(ratios)
	t.add("HTTPS throughput (req/s, 32 keep-alive conns)", fmt.Sprintf("%.0f", median(vr.rps)), fmt.Sprintf("%.0f nginx", median(ng.rps)),
		fmt.Sprintf("%.2f×", ratio), "≥ 1.0× nginx", verdict(ratio >= 1.0))
	t.add("HTTPS p50 latency", fmtDur(median(vr.p50)), fmtDur(median(ng.p50)), fmtDiff(median(p50d)), "", info)
	t.add("HTTPS p99 latency", fmtDur(median(vr.p99)), fmtDur(median(ng.p99)), fmtDiff(median(p99d)), "no worse than nginx", verdict(median(p99d) <= 0))
	t.add("one core (GOMAXPROCS=1), as nginx's one worker", fmt.Sprintf("%.0f, p99 %s", median(one.rps), fmtDur(median(one.p99))),
		fmt.Sprintf("%.0f, p99 %s nginx", median(ng.rps), fmtDur(median(ng.p99))), fmt.Sprintf("%.2f×, p99 %s", median(oneR), fmtDiff(median(oneP99d))), "", info)
	t.add("proxy CPU time per HTTPS call", fmtDur(median(vr.cpu)), fmtDur(median(ng.cpu))+" nginx",
		fmt.Sprintf("%.2f×", float64(median(vr.cpu))/float64(median(ng.cpu))), "", info)
	t.add("full handshakes per second (8 clients)", fmt.Sprintf("%.0f", median(vr.full)), fmt.Sprintf("%.0f nginx", median(ng.full)),
		fmt.Sprintf("%.2f×", median(fullR)), "", info)
	t.add("resumed handshakes per second (8 clients)", fmt.Sprintf("%.0f", median(vr.resumed)), fmt.Sprintf("%.0f nginx", median(ng.resumed)),
		fmt.Sprintf("%.2f×", median(resR)), "", info)
	t.add("server CPU per full / resumed handshake", fmtDur(median(vr.fullCPU))+" / "+fmtDur(median(vr.resCPU)),
		fmtDur(median(ng.fullCPU))+" / "+fmtDur(median(ng.resCPU))+" nginx", "", "", info)

	var sb strings.Builder
	sb.WriteString("## HTTPS\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	sb.WriteString("TLS termination: `velo router` (its own process, route table in a throwaway Postgres) serving HTTPS with a certificate from files (`VELO_TLS_CERT`/`VELO_TLS_KEY`, ECDSA P-256) against Debian's nginx (one worker process, `ssl_protocols TLSv1.2 TLSv1.3`, `ssl_session_cache shared:SSL:10m`, session tickets on (its default), `upstream { keepalive 64; }`, `proxy_http_version 1.1`, keep-alive requests unlimited) terminating TLS with the same certificate; both forward over plain HTTP/1.1 keep-alive to the same static backend (a second nginx, `return 200`). " +
		fmt.Sprintf("wrk -t2 -c32 over HTTPS (keep-alive: the handshakes happen once, then every request is TLS records), %v per run after a 2s warm-up, interleaved in each of %d rounds; medians of values and of per-round ratios. "+
			"Handshakes: a Go client with 8 goroutines dials, completes a TLS handshake (TLS 1.3, X25519 only: without that setting Go's client offers the hybrid X25519MLKEM768 first, which Velo's crypto/tls takes and nginx's OpenSSL 3.0 cannot; verifying the certificate) and closes, for %v per run; *full* without a session cache, *resumed* with one (TLS 1.3 session tickets; nginx and Go both issue them by default); server CPU per handshake is the serving process's CPU time over the run divided by the handshakes. "+
			"The router's TLS connections are shaken hands by Go's crypto/tls on a goroutine each and then, for HTTP/1.1 (what wrk speaks; h2 is offered by ALPN and goes to net/http), served by the event loops as plain connections are (one loop per GOMAXPROCS, here %d; the loop reads the socket, crypto/tls decrypts the records, one record per small answer; router/fasttls.go). *One core* is the same router with GOMAXPROCS=1 (one loop, like nginx's one worker; wrk runs only). wrk, the backend, nginx and the routers share the machine's CPUs. wrk errors (non-2xx, socket) velo/nginx: %d/%d; failed handshakes: %d/%d. Clients close with a reset (no TIME_WAIT on their ports).\n\n", b.Duration, b.Rounds, b.Duration/2, runtime.GOMAXPROCS(0), vr.bad, ng.bad, vr.hsBad, ng.hsBad))
	sb.WriteString(t.String())
	sb.WriteString("\nPer round — req/s velo router / nginx: " + pairs(vr.rps, ng.rps, func(v float64) string { return fmt.Sprintf("%.0f", v) }) +
		"; p99: " + pairs(durFloats(vr.p99), durFloats(ng.p99), func(v float64) string { return fmtDur(time.Duration(v)) }) +
		"; one core req/s/nginx's, one core p99/nginx's: " + pairs(one.rps, ng.rps, func(v float64) string { return fmt.Sprintf("%.0f", v) }) + "; " +
		pairs(durFloats(one.p99), durFloats(ng.p99), func(v float64) string { return fmtDur(time.Duration(v)) }) +
		"; full handshakes/s: " + pairs(vr.full, ng.full, func(v float64) string { return fmt.Sprintf("%.0f", v) }) +
		"; resumed: " + pairs(vr.resumed, ng.resumed, func(v float64) string { return fmt.Sprintf("%.0f", v) }) + ".\n")
	return sb.String(), nil
}

// benchCert writes a self-signed ECDSA certificate for host and 127.0.0.1.
func benchCert(dir, host string) (*x509.CertPool, string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{host}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	certFile, keyFile := filepath.Join(dir, "tls-cert.pem"), filepath.Join(dir, "tls-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, "", "", err
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool, certFile, keyFile, nil
}

// startVeloTLSRouter runs velo router with HTTPS from files and returns
// its TLS address once /fn/bench/ answers there.
func startVeloTLSRouter(ctx context.Context, b *Bench, velo, db, certFile, keyFile string, roots *x509.CertPool, host string, env ...string) (string, func(), int, error) {
	plain, err := freeAddr()
	if err != nil {
		return "", nil, 0, err
	}
	tlsAddr, err := freeAddr()
	if err != nil {
		return "", nil, 0, err
	}
	logf, err := os.Create(filepath.Join(b.Tmp, fmt.Sprintf("router-tls-%s.log", strings.ReplaceAll(tlsAddr, ":", "-"))))
	if err != nil {
		return "", nil, 0, err
	}
	cmd := exec.Command(velo, "router", "--addr", plain, "--https-addr", tlsAddr)
	cmd.Env = append(os.Environ(), "VELO_DATABASE_URL="+db, "VELO_CLUSTER_TOKEN=bench", "VELO_LOG_LEVEL=warn",
		"VELO_TLS_CERT="+certFile, "VELO_TLS_KEY="+keyFile)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", nil, 0, err
	}
	stop := func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait(); logf.Close() }
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host}}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := client.Get("https://" + tlsAddr + "/fn/bench/")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return tlsAddr, stop, cmd.Process.Pid, nil
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, 0, fmt.Errorf("velo router with TLS: %w (log in %s)", err, logf.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// handshakes dials addr from clients goroutines for d, each completing a
// TLS handshake and closing; resume shares a session cache, so that
// after the first every handshake resumes. It returns the handshakes
// done and failed, and the first failure.
func handshakes(ctx context.Context, addr, host string, roots *x509.CertPool, resume bool, clients int, d time.Duration) (done, failed int64, first string) {
	var n, bad atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for range clients {
		// X25519 alone, as wrk (OpenSSL) and Debian's nginx (OpenSSL
		// 3.0, no ML-KEM) do: Go's default offers X25519MLKEM768 first,
		// which a Go server takes, at several times the cost.
		cfg := &tls.Config{RootCAs: roots, ServerName: host, CurvePreferences: []tls.CurveID{tls.X25519}}
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		}
		wg.Go(func() {
			// Closed with a reset (linger 0): no TIME_WAIT piles up
			// on the client's ports over thousands of dials.
			nd := &net.Dialer{Timeout: 5 * time.Second}
			dialer := &tls.Dialer{NetDialer: nd, Config: cfg}
			for ctx.Err() == nil {
				c, err := dialer.DialContext(ctx, "tcp", addr)
				if err != nil {
					if ctx.Err() == nil && bad.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					continue
				}
				// TLS 1.3 tickets arrive after the handshake: when this
				// one did not resume, read until one is in (the server
				// says nothing else); later dials resume with it. Only
				// resumed handshakes count as such.
				tc, _ := c.(*tls.Conn)
				if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
					_ = tcp.SetLinger(0)
				}
				if resume && tc != nil && !tc.ConnectionState().DidResume {
					_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					_, _ = c.Read(make([]byte, 1))
					c.Close()
					continue
				}
				c.Close()
				n.Add(1)
			}
		})
	}
	wg.Wait()
	first, _ = firstErr.Load().(string)
	return n.Load(), bad.Load(), first
}
