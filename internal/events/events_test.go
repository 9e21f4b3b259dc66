package events_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/internal/testsupport/testmods"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// flakyWasm answers 503 to a queued call until its attempt reaches ?ok=N.
var flakyWasm = testmods.Flaky

// spine is an in-process Velo with one deployed flaky component.
type spine struct {
	t   *testing.T
	ctx context.Context
	n   *node.Node
	c   *client.Client
}

func start(t *testing.T, db, toml string) *spine {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), DatabaseURL: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	go func() { _ = n.Wait(ctx) }()
	s := &spine{t: t, ctx: ctx, n: n, c: client.New(n.URL, n.Token, nil)}
	s.deploy(toml)
	return s
}

func (s *spine) deploy(toml string) {
	s.t.Helper()
	files := map[string][]byte{"velo.toml": []byte(toml), "flaky.wasm": flakyWasm}
	if _, err := s.c.Deploy(s.ctx, "flaky", bytes.NewReader(archivetest.TarGz(s.t, files))); err != nil {
		s.t.Fatal(err)
	}
	testsupport.Eventually(s.t, 30*time.Second, "flaky live", func() bool {
		res, err := http.Get(s.n.URL + "/fn/flaky/up?ok=1")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200 || res.StatusCode == 401 // private
	})
}

// settledTotals returns the router's hits and errors of component name once
// they have stopped moving: a call's hit is counted just after its answer
// is written, so a count read the moment a client has its answer may not
// hold it yet.
func (s *spine) settledTotals(name string) [2]int64 {
	s.t.Helper()
	last := s.n.Router.Totals()[name]
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		now := s.n.Router.Totals()[name]
		if now == last {
			return now
		}
		last = now
	}
	s.t.Fatalf("hits of %s still moving after 10 s: %v", name, last)
	return last
}

// post calls path with Prefer: respond-async and returns the invocation id.
func (s *spine) post(path, body string, header ...string) (int64, *http.Response) {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.n.URL+path, strings.NewReader(body))
	req.Header.Set("Prefer", "respond-async")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		return 0, res
	}
	id, err := strconv.ParseInt(res.Header.Get("X-Velo-Invocation"), 10, 64)
	if err != nil || res.Header.Get("Location") != fmt.Sprintf("/api/v1/invocations/%d", id) {
		s.t.Fatalf("202 with X-Velo-Invocation %q, Location %q", res.Header.Get("X-Velo-Invocation"), res.Header.Get("Location"))
	}
	return id, res
}

// api calls the REST API and decodes its JSON answer into out.
func (s *spine) api(method, path string, out any) int {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.n.URL+"/api/v1"+path, nil)
	req.Header.Set("Authorization", "Bearer "+s.n.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && res.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return res.StatusCode
}

func (s *spine) invocation(id int64) api.Invocation {
	s.t.Helper()
	var inv api.Invocation
	if code := s.api("GET", fmt.Sprintf("/invocations/%d", id), &inv); code != 200 {
		s.t.Fatalf("GET invocation %d: %d", id, code)
	}
	return inv
}

// waitState waits until invocation id is in state.
func (s *spine) waitState(id int64, state string) api.Invocation {
	s.t.Helper()
	var inv api.Invocation
	testsupport.EventuallyShow(s.t, 60*time.Second, fmt.Sprintf("invocation %d %s", id, state), func() bool {
		inv = s.invocation(id)
		return inv.State == state
	}, func() string { b, _ := json.Marshal(inv); return string(b) })
	return inv
}

const flakyToml = `name = "flaky"
module = "flaky.wasm"
[events]
max_attempts = 3
backoff = "50ms"
`

func TestAsyncSQLite(t *testing.T) { testAsync(t, "") }

func TestAsyncPostgres(t *testing.T) { testAsync(t, pgtest.URL(t)) }

// testAsync: an async call is answered 202 once queued, runs later through
// the router (retried on 503 with the attempt number, until it succeeds),
// its answer kept; Idempotency-Key dedupes; a call that never succeeds goes
// dead after max_attempts, is listed as such, replayed, discarded.
func testAsync(t *testing.T, db string) {
	s := start(t, db, flakyToml)

	// Succeeds at the second attempt; a forged attempt header is dropped.
	before := s.settledTotals("flaky")
	id, _ := s.post("/fn/flaky/job?ok=2", "hello", "X-Velo-Attempt", "7")
	inv := s.waitState(id, "succeeded")
	// Both attempts count in the statistics like any call, one an error.
	if after := s.settledTotals("flaky"); after[0]-before[0] != 2 || after[1]-before[1] != 1 {
		t.Errorf("hits and errors counted for two attempts: %v, want +2 and +1", [2]int64{after[0] - before[0], after[1] - before[1]})
	}
	if inv.Component != "flaky" || inv.Source != "async" || inv.Method != "POST" || inv.Path != "/fn/flaky/job" ||
		inv.Attempt != 2 || len(inv.Attempts) != 2 || inv.Attempts[0].Status != 503 || inv.Attempts[0].Error == "" ||
		inv.Attempts[1].Status != 200 || inv.Attempts[1].Error != "" {
		t.Errorf("invocation: %+v", inv)
	}
	if inv.Answer == nil || inv.Answer.Status != 200 || string(inv.Answer.Body) != "attempt=2 method=POST path=/job body=hello" ||
		inv.Answer.Headers["X-Flaky"][0] != "yes" {
		t.Errorf("answer: %+v", inv.Answer)
	}

	// The same Idempotency-Key answers the same invocation.
	a, _ := s.post("/fn/flaky/once?ok=1", "x", "Idempotency-Key", "k-1")
	b, res := s.post("/fn/flaky/once?ok=1", "x", "Idempotency-Key", "k-1")
	if a != b || res.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("same Idempotency-Key: invocations %d and %d", a, b)
	}
	if c, _ := s.post("/fn/flaky/once?ok=1", "x", "Idempotency-Key", "k-2"); c == a {
		t.Errorf("another key got invocation %d too", c)
	}
	s.waitState(a, "succeeded")

	// Never succeeds: dead after three attempts, listed, replayed once more.
	dead, _ := s.post("/fn/flaky/never", "")
	inv = s.waitState(dead, "dead")
	if inv.Attempt != 3 || len(inv.Attempts) != 3 || inv.Answer == nil || inv.Answer.Status != 503 {
		t.Errorf("dead invocation: %+v", inv)
	}
	req, _ := http.NewRequest("GET", s.n.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.n.Token)
	if res, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(b), `velo_events_dead{queue="flaky"} 1`) {
			t.Errorf("/metrics has no dead count for flaky:\n%s", grepLines(string(b), "velo_events"))
		}
	}
	var list []api.Invocation
	if code := s.api("GET", "/components/flaky/invocations?state=dead", &list); code != 200 || len(list) != 1 || list[0].ID != dead {
		t.Errorf("dead list: %d %+v", code, list)
	}
	var inv2 api.Invocation
	if code := s.api("POST", fmt.Sprintf("/invocations/%d/replay", dead), &inv2); code != 200 {
		t.Fatalf("replay: %d", code)
	}
	testsupport.Eventually(t, 60*time.Second, "the replay's attempt", func() bool {
		inv = s.invocation(dead)
		return inv.State == "dead" && inv.Attempt == 4 && len(inv.Attempts) == 4
	})
	if code := s.api("DELETE", fmt.Sprintf("/invocations/%d", dead), nil); code != 204 {
		t.Errorf("discard: %d", code)
	}
	if code := s.api("GET", fmt.Sprintf("/invocations/%d", dead), nil); code != 404 {
		t.Errorf("discarded invocation: %d, want 404", code)
	}
	if code := s.api("GET", "/invocations/999999", nil); code != 404 {
		t.Errorf("unknown invocation: %d", code)
	}
	if code := s.api("GET", "/components/flaky/invocations?state=bogus", nil); code != 400 {
		t.Errorf("bad state: %d", code)
	}

	// A call to a component that does not exist is not queued.
	if _, res := s.post("/fn/nobody/x", ""); res.StatusCode != 404 {
		t.Errorf("async call for no component: %d", res.StatusCode)
	}
}

// TestAsyncAccess: an async call passes the same access checks as any
// call: without a key nothing is queued, with one it runs, and the
// component sees the caller's identity, not the key.
func TestAsyncAccess(t *testing.T) {
	s := start(t, "", flakyToml+"[access]\npublic = false\n")
	if _, res := s.post("/fn/flaky/job?ok=1", "x"); res.StatusCode != 401 {
		t.Fatalf("async call without a key: %d, want 401", res.StatusCode)
	}
	var list []api.Invocation
	if s.api("GET", "/components/flaky/invocations", &list); len(list) != 0 {
		t.Fatalf("queued without a key: %+v", list)
	}
	key, err := s.c.CreateAPIKey(s.ctx, "flaky", "ci")
	if err != nil {
		t.Fatal(err)
	}
	var id int64
	testsupport.Eventually(t, 30*time.Second, "the key admitted", func() bool {
		var res *http.Response
		id, res = s.post("/fn/flaky/job?ok=1", "x", "Authorization", "Bearer "+key.Key)
		return res.StatusCode == 202
	})
	inv := s.waitState(id, "succeeded")
	if inv.Answer == nil || inv.Answer.Status != 200 {
		t.Errorf("answer: %+v", inv.Answer)
	}
}

const signedToml = `name = "flaky"
module = "flaky.wasm"
[events]
verify = "hmac-sha256"
header = "X-Signature"
prefix = "sha256="
secret = "HOOK_KEY"
`

// TestInboundEvents: POST /events/NAME/… is queued and answered 202 and
// runs the component with that request; with [events] verify, a missing
// or wrong signature is 401 and queues nothing, the right one is taken.
func TestInboundEvents(t *testing.T) {
	s := start(t, "", flakyToml)
	post := func(path, body string, header ...string) *http.Response {
		req, _ := http.NewRequest("POST", s.n.URL+path, strings.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	res := post("/events/flaky/hook?ok=1", `{"ping":1}`)
	if res.StatusCode != 202 {
		t.Fatalf("POST /events/flaky/hook: %d", res.StatusCode)
	}
	id, _ := strconv.ParseInt(res.Header.Get("X-Velo-Invocation"), 10, 64)
	inv := s.waitState(id, "succeeded")
	if inv.Source != "event" || inv.Path != "/fn/flaky/hook" || inv.Answer == nil ||
		string(inv.Answer.Body) != `attempt=1 method=POST path=/hook body={"ping":1}` {
		t.Errorf("event invocation: %+v", inv)
	}
	if res := post("/events/nobody/x", ""); res.StatusCode != 404 {
		t.Errorf("event for no component: %d", res.StatusCode)
	}
	req, _ := http.NewRequest("GET", s.n.URL+"/events/flaky/x", nil)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 405 {
		t.Errorf("GET /events/flaky/x: %v %v", res.StatusCode, err)
	}

	// Signed: the key is a secret of the component.
	if _, err := s.c.SetSecret(s.ctx, "flaky", "HOOK_KEY", "whsec-test"); err != nil {
		t.Fatal(err)
	}
	s.deploy(signedToml)
	body := `{"event":"push"}`
	good := "sha256=" + hmacHex("whsec-test", body)
	testsupport.Eventually(t, 30*time.Second, "the signature checked", func() bool {
		return post("/events/flaky/signed?ok=1", body).StatusCode == 401
	})
	var before []api.Invocation
	s.api("GET", "/components/flaky/invocations", &before)
	for _, sig := range []string{"", "sha256=00", "sha256=" + hmacHex("other-key", body), hmacHex("whsec-test", body)} {
		if res := post("/events/flaky/signed?ok=1", body, "X-Signature", sig); res.StatusCode != 401 {
			t.Errorf("signature %q: %d, want 401", sig, res.StatusCode)
		}
	}
	var list []api.Invocation
	s.api("GET", "/components/flaky/invocations", &list)
	if len(list) != len(before) {
		t.Fatalf("refused events queued: %d invocations, %d before", len(list), len(before))
	}
	res = post("/events/flaky/signed?ok=1", body, "X-Signature", good)
	if res.StatusCode != 202 {
		t.Fatalf("signed event: %d", res.StatusCode)
	}
	id, _ = strconv.ParseInt(res.Header.Get("X-Velo-Invocation"), 10, 64)
	s.waitState(id, "succeeded")
}

func hmacHex(key, body string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

// TestSchedule: a [[schedule]] calls its path on every tick through the
// normal path, and GET /components/{name} shows the next run and how the
// last one went.
func TestSchedule(t *testing.T) {
	s := start(t, "", flakyToml+"[[schedule]]\ncron = \"@every 1s\"\npath = \"/tick?ok=1\"\nbody = \"tock\"\n")
	var list []api.Invocation
	testsupport.EventuallyShow(t, 60*time.Second, "two scheduled calls succeeded", func() bool {
		list = nil
		s.api("GET", "/components/flaky/invocations?state=succeeded", &list)
		return len(list) >= 2
	}, func() string { b, _ := json.Marshal(list); return string(b) })
	inv := s.invocation(list[0].ID)
	if inv.Source != "schedule" || inv.Method != "POST" || inv.Path != "/fn/flaky/tick" || inv.Answer == nil ||
		string(inv.Answer.Body) != "attempt=1 method=POST path=/tick body=tock" {
		t.Errorf("scheduled invocation: %+v", inv)
	}
	var comp api.Component
	s.api("GET", "/components/flaky", &comp)
	if len(comp.Schedules) != 1 || comp.Schedules[0].Cron != "@every 1s" || comp.Schedules[0].NextRun == nil ||
		comp.Schedules[0].Last == nil || comp.Schedules[0].Last.Invocation == 0 {
		t.Errorf("schedules in the component: %+v", comp.Schedules)
	}

	// A bad cron expression fails the deploy, naming the key and why.
	files := map[string][]byte{"velo.toml": []byte(flakyToml + "[[schedule]]\ncron = \"*/5 * *\"\n"), "flaky.wasm": flakyWasm}
	_, err := s.c.Deploy(s.ctx, "flaky", bytes.NewReader(archivetest.TarGz(t, files)))
	if err == nil || !strings.Contains(err.Error(), "schedule[0].cron") || !strings.Contains(err.Error(), "expected exactly 5 fields") {
		t.Errorf("deploying a bad cron: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
