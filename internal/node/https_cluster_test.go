package node

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/acmetest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestHTTPSSharedAcrossRouters: two velo routers on one Postgres, asked
// for the same new host at the same moment, both serve the one
// certificate that only one of them obtained (the other waited on the
// store's lock and loaded it); Pebble validates on the first router's
// ports whichever router asked, so the challenge answers are shared too.
func TestHTTPSSharedAcrossRouters(t *testing.T) {
	url := pgtest.URL(t)
	const domain = "apps.velo.test"
	ports := [2][2]int{}
	for i := range ports {
		ports[i] = [2]int{acmetest.FreePort(t), acmetest.FreePort(t)}
	}
	ca := acmetest.Start(t, acmetest.Options{HTTPPort: ports[0][0], TLSPort: ports[0][1]})
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.CreateComponent(context.Background(), store.Component{Name: "shared"}); err != nil {
		t.Fatal(err)
	}
	key := secrets.NewKey()
	var ev [2]certEvents
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range 2 {
		role, err := NewRouter(ctx, RouterConfig{
			Cluster: Cluster{
				Addr: fmt.Sprintf("127.0.0.1:%d", ports[i][0]), DatabaseURL: url, SecretsKey: key,
				Logger: testLogger(t).With("router", i),
			},
			ClusterToken: "cluster-token",
			Domain:       domain,
			TLS: TLS{
				HTTPS: HTTPSACME, Addr: fmt.Sprintf("127.0.0.1:%d", ports[i][1]),
				CA: ca.Directory, CARoots: ca.Roots, OnEvent: ev[i].record,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := role.Run(ctx); err != nil {
				t.Errorf("router %d: %v", i, err)
			}
		})
	}
	roots := ca.IssuerRoots(t)
	host := "shared." + domain
	// Both routers listen and know the component (their first table).
	for i := range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", ports[i][1])
		testsupport.Eventually(t, 60*time.Second, fmt.Sprintf("router %d listens for TLS", i), func() bool {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	type got struct {
		serial string
		err    error
	}
	results := make(chan got, 2)
	for i := range 2 {
		go func() {
			c, err := handshake(fmt.Sprintf("127.0.0.1:%d", ports[i][1]), host, roots)
			if err != nil {
				results <- got{err: fmt.Errorf("router %d: %w", i, err)}
				return
			}
			results <- got{serial: c.SerialNumber.String()}
		}()
	}
	a, b := <-results, <-results
	if a.err != nil || b.err != nil {
		t.Fatalf("handshakes: %v, %v; events %s / %s", a.err, b.err, ev[0].String(), ev[1].String())
	}
	if a.serial != b.serial {
		t.Errorf("the routers serve different certificates (%s, %s): each obtained its own", a.serial, b.serial)
	}
	if n := ev[0].count("cert_obtained") + ev[1].count("cert_obtained"); n != 1 {
		t.Errorf("%d certificates obtained for %s, want 1: %s / %s", n, host, ev[0].String(), ev[1].String())
	}
	if n := ev[0].count("cert_obtaining") + ev[1].count("cert_obtaining"); n != 1 {
		t.Errorf("%d issuances begun, want 1: %s / %s", n, ev[0].String(), ev[1].String())
	}
	// Stored once, sealed: no private key in the clear.
	keys, err := st.TLSKeys(context.Background(), "certificates")
	if err != nil || len(keys) == 0 {
		t.Fatalf("stored certificates: %v %v", keys, err)
	}
	for _, k := range keys {
		it, err := st.TLS(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if containsPEM(it.Value) {
			t.Errorf("%s is stored in the clear", k)
		}
	}
}

func containsPEM(b []byte) bool {
	for i := 0; i+10 <= len(b); i++ {
		if string(b[i:i+10]) == "-----BEGIN" {
			return true
		}
	}
	return false
}
