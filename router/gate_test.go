package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// keyStore is a tableStore with API keys.
type keyStore struct {
	tableStore
	keys []store.APIKey
}

func (s *keyStore) APIKeys(context.Context, string) ([]store.APIKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.APIKey(nil), s.keys...), nil
}

func hashKey(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// echoIdentity answers with what of the caller's credentials and identity
// reached the component.
func echoIdentity(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "subject=%s key=%s client-auth=%s api-key=%s",
		r.Header.Get(HeaderAuthSubject), r.Header.Get(HeaderAuthKey),
		r.Header.Get(HeaderClientAuthorization), r.Header.Get(HeaderAPIKey))
}

// gatedRouter routes "private" (API keys), "public" and "other" (private,
// its own key) to worker a, with the manifests given.
func gatedRouter(t *testing.T, a *fakeWorker, manifests map[string]string, cfg Config) (*Router, *keyStore) {
	t.Helper()
	rm := NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"})
	t.Cleanup(rm.Close)
	ws := []store.Worker{{Name: a.name, Addr: a.srv.URL, SeenAt: time.Now()}}
	st := &keyStore{keys: []store.APIKey{
		{ID: "k1", Component: "private", Label: "ci", Hash: hashKey("velo_k_secret1")},
		{ID: "k2", Component: "other", Label: "", Hash: hashKey("velo_k_secret2")},
	}}
	d := int64(1)
	for name, m := range manifests {
		st.routes = append(st.routes, store.Route{Component: name, Deployment: d, Workers: ws, Manifest: []byte(m)})
		d++
	}
	cfg.Backend, cfg.Logger = rm.Backend, discardLogger()
	r := New(cfg, st)
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, st
}

func TestAPIKeys(t *testing.T) { bothPaths(t, testAPIKeys) }

func testAPIKeys(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", echoIdentity)
	r, _ := gatedRouter(t, a, map[string]string{
		"private": `{"access":{}}`,
		"other":   `{"access":{}}`,
		"public":  `{}`,
	}, Config{})
	addr := fastServer(t, r, loops)
	for _, tc := range []struct {
		name, raw string
		status    int
		body      string
		challenge string
	}{
		{"no credential", "GET /fn/private/ HTTP/1.1\r\nHost: h\r\n\r\n", 401, `component "private" is private`, `Bearer realm="private"`},
		{"unknown key", "GET /fn/private/ HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer velo_k_nope\r\n\r\n", 401, "unknown or revoked API key", `Bearer realm="private", error="invalid_token"`},
		{"not a key", "GET /fn/private/ HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dXNlcg==\r\n\r\n", 401, `component "private" is private`, `Bearer realm="private"`},
		{"another component's key", "GET /fn/private/ HTTP/1.1\r\nHost: h\r\nX-Api-Key: velo_k_secret2\r\n\r\n", 403, "not one of component", ""},
		{"bearer key", "GET /fn/private/ HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer velo_k_secret1\r\n\r\n", 200, "subject=key:k1 key=ci client-auth= api-key=", ""},
		{"X-Api-Key", "POST /fn/private/ HTTP/1.1\r\nHost: h\r\nX-Api-Key: velo_k_secret1\r\nContent-Length: 2\r\n\r\nhi", 200, "subject=key:k1 key=ci client-auth= api-key=", ""},
		{"forged identity", "GET /fn/other/ HTTP/1.1\r\nHost: h\r\nX-Api-Key: velo_k_secret2\r\nX-Velo-Auth-Key: admin\r\nX-Velo-Auth-Subject: root\r\n\r\n", 200, "subject=key:k2 key= client-auth= api-key=", ""},
		{"public keeps its headers", "GET /fn/public/ HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dXNlcg==\r\nX-Api-Key: theirs\r\nX-Velo-Auth-Subject: root\r\n\r\n", 200, "subject= key= client-auth=Basic dXNlcg== api-key=theirs", ""},
	} {
		res := rawExchange(t, addr, tc.raw, 1)[0]
		got := readBody(res)
		if res.StatusCode != tc.status || !strings.Contains(got, tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, res.StatusCode, got, tc.status, tc.body)
		}
		if c := res.Header.Get("WWW-Authenticate"); c != tc.challenge {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, c, tc.challenge)
		}
	}
	// A refused call never reaches the worker, and it is counted.
	if got := a.calls.Load(); got != 4 {
		t.Errorf("worker calls: %d, want 4", got)
	}
	if got := r.Totals()["private"][0]; got != 6 {
		t.Errorf("hits counted for private: %d, want 6 (refusals included)", got)
	}
	// Keep-alive holds across a refusal: the next request on the
	// connection is answered.
	res := rawExchange(t, addr, "GET /fn/private/ HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/private/ HTTP/1.1\r\nHost: h\r\nX-Api-Key: velo_k_secret1\r\n\r\n", 2)
	if res[0].StatusCode != 401 || res[1].StatusCode != 200 {
		t.Errorf("refusal then call on one connection: %d, %d", res[0].StatusCode, res[1].StatusCode)
	}
}

// TestAPIKeyRevoked: a key taken out of the store stops working at the
// next refresh (the notification a revocation sends).
func TestAPIKeyRevoked(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", echoIdentity)
	r, st := gatedRouter(t, a, map[string]string{"private": `{"access":{}}`}, Config{})
	call := func() int {
		req, _ := http.NewRequest("GET", "/fn/private/", nil)
		req.Header.Set("Authorization", "Bearer velo_k_secret1")
		return do(t, r, req).Code
	}
	if got := call(); got != 200 {
		t.Fatalf("with the key: %d", got)
	}
	st.mu.Lock()
	st.keys = nil
	st.mu.Unlock()
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := call(); got != 401 {
		t.Fatalf("after revocation: %d, want 401", got)
	}
}

func limitsJSON(count int, per time.Duration, burst int, by string) string {
	return fmt.Sprintf(`{"count":%d,"per":%d,"burst":%d,"by":%q}`, count, per, burst, by)
}

// TestRateLimitConcurrent: clients hammering at once each get exactly
// their burst, then 429 with Retry-After and RateLimit fields.
func TestRateLimitConcurrent(t *testing.T) { bothPaths(t, testRateLimitConcurrent) }

func testRateLimitConcurrent(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", echoIdentity)
	r, st := gatedRouter(t, a, map[string]string{
		"private": `{"access":{},"limits":` + limitsJSON(5, time.Hour, 5, "key") + `}`,
	}, Config{})
	const clients, calls = 6, 12
	st.mu.Lock()
	for i := range clients {
		st.keys = append(st.keys, store.APIKey{ID: fmt.Sprint("c", i), Component: "private", Label: "l", Hash: hashKey(fmt.Sprint("velo_k_c", i))})
	}
	st.mu.Unlock()
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	addr := fastServer(t, r, loops)
	var mu sync.Mutex
	ok := map[int]int{}
	var wg sync.WaitGroup
	for i := range clients {
		for range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := rawExchange(t, addr, fmt.Sprintf("GET /fn/private/ HTTP/1.1\r\nHost: h\r\nX-Api-Key: velo_k_c%d\r\nConnection: close\r\n\r\n", i), 1)[0]
				switch res.StatusCode {
				case 200:
					mu.Lock()
					ok[i]++
					mu.Unlock()
					if res.Header.Get("RateLimit-Limit") != "5" || res.Header.Get("RateLimit-Remaining") == "" {
						t.Errorf("admitted call without RateLimit fields: %v", res.Header)
					}
				case 429:
					if ra := res.Header.Get("Retry-After"); ra == "" || ra == "0" || res.Header.Get("RateLimit-Remaining") != "0" || res.Header.Get("RateLimit-Reset") == "" {
						t.Errorf("429 headers: %v", res.Header)
					}
				default:
					t.Errorf("status %d", res.StatusCode)
				}
			}()
		}
	}
	wg.Wait()
	for i := range clients {
		if ok[i] != 5 {
			t.Errorf("client %d admitted %d times, want 5 (its burst)", i, ok[i])
		}
	}
}

func TestRateLimitByIP(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", echoIdentity)
	// From a trusted proxy, the client is the address it forwards for.
	r, _ := gatedRouter(t, a, map[string]string{"public": `{"limits":` + limitsJSON(2, time.Hour, 2, "ip") + `}`},
		Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	addr := fastServer(t, r, 0)
	call := func(ip string) int {
		return rawExchange(t, addr, "GET /fn/public/ HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: "+ip+"\r\n\r\n", 1)[0].StatusCode
	}
	got := []int{call("192.0.2.1"), call("192.0.2.1"), call("192.0.2.1"), call("192.0.2.2")}
	if fmt.Sprint(got) != "[200 200 429 200]" {
		t.Fatalf("statuses %v, want [200 200 429 200]", got)
	}
}

func TestLimiterRefillsAndStaysBounded(t *testing.T) {
	l := newLimiter("c", manifest.Limits{Count: 60, Per: time.Minute, Burst: 2, By: "ip"}, 64)
	t0 := time.Unix(1000, 0)
	k := []byte("client")
	if !l.take(k, t0).ok || !l.take(k, t0).ok {
		t.Fatal("burst not admitted")
	}
	s := l.take(k, t0)
	if s.ok || s.retry != 1 || s.remaining != 0 {
		t.Fatalf("third call at once: %+v", s)
	}
	if !l.take(k, t0.Add(time.Second)).ok {
		t.Fatal("a token a second later not admitted")
	}
	// However many clients come, the buckets stay within the bound.
	for i := range 10000 {
		l.take(fmt.Appendf(nil, "ip%d", i), t0.Add(2*time.Second))
	}
	if n := l.clients(); n > 64 || n == 0 {
		t.Fatalf("%d buckets after 10000 clients, want at most 64", n)
	}
}

// BenchmarkAdmit is the gate's cost per call on the fast path: an API key
// looked up by its sha256 and a token taken from its bucket.
func BenchmarkAdmit(b *testing.B) {
	st := &keyStore{keys: []store.APIKey{{ID: "k1", Component: "gated", Label: "l", Hash: hashKey("velo_k_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")}}}
	st.routes = []store.Route{{Component: "gated", Deployment: 1, Manifest: []byte(`{"access":{},"limits":` + limitsJSON(100000000, time.Second, 100000000, "key") + `}`)}}
	r := New(Config{Backend: func(store.Worker) Backend { return &backend{} }, Logger: discardLogger()}, st)
	if err := r.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	t := r.table.Load()
	rt := t.routes["gated"]
	creds := credentials{apiKey: []byte("velo_k_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")}
	client := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	// CPU time, not wall time: on a loaded machine the wall clock counts
	// other processes' turns too.
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	b.ResetTimer()
	for range b.N {
		if a := r.admit(context.Background(), t, rt, creds, client, time.Now()); a.status != 0 {
			b.Fatal(a.msg)
		}
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano()+r1.Stime.Nano()-r0.Utime.Nano()-r0.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}
