package webui_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/testsupport"
)

// jobsToml is the echo module with one attempt per queued call (a failed
// one is dead at once) and an hourly schedule.
const jobsToml = "module = \"echo.wasm\"\n[events]\nmax_attempts = 1\n[[schedule]]\ncron = \"@every 1h\"\npath = \"/env\"\n"

// queue posts body to path of the node with Prefer: respond-async and
// returns the invocation id.
func (v *velo) queue(path, body string) int64 {
	v.t.Helper()
	req, _ := http.NewRequestWithContext(v.ctx, http.MethodPost, v.n.URL+path, strings.NewReader(body))
	req.Header.Set("Prefer", "respond-async")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	res.Body.Close()
	id, err := strconv.ParseInt(res.Header.Get("X-Velo-Invocation"), 10, 64)
	if res.StatusCode != http.StatusAccepted || err != nil {
		v.t.Fatalf("POST %s: %d, invocation %q", path, res.StatusCode, res.Header.Get("X-Velo-Invocation"))
	}
	return id
}

// waitState waits until invocation id is in state with attempts made.
func (v *velo) waitState(id int64, state string, attempts int) api.Invocation {
	v.t.Helper()
	var inv api.Invocation
	testsupport.EventuallyShow(v.t, 60*time.Second, fmt.Sprintf("invocation %d %s after %d attempts", id, state, attempts), func() bool {
		var err error
		inv, err = v.c.Invocation(v.ctx, id)
		return err == nil && inv.State == state && inv.Attempt == attempts
	}, func() string { return fmt.Sprintf("%+v", inv) })
	return inv
}

// The component page shows the queue's counts, the schedules with their
// next run, the dead calls with Replay and Discard and the newest calls;
// an invocation's page its attempts and its answer, escaped. The buttons
// want the form's CSRF token.
func TestQueuedCallsOnComponentPage(t *testing.T) {
	v := startVelo(t, nil)
	v.deploy("jobs", map[string][]byte{"echo.wasm": echoWasm, "velo.toml": []byte(jobsToml)})
	dead := v.queue("/fn/jobs/exit", "")
	ok := v.queue("/fn/jobs/echo", hostile)
	v.waitState(dead, "dead", 1)
	v.waitState(ok, "succeeded", 1)

	b := v.browser()
	b.signInAdmin()
	code, page := b.get("/components/jobs")
	if code != 200 {
		t.Fatalf("component page: %d\n%s", code, page)
	}
	for _, want := range []string{
		`<dd id="dead-count">1</dd>`, `<dd id="queued">0</dd>`, `<dd id="running">0</dd>`,
		`<code>@every 1h</code>`, `<code>POST /env</code>`,
		fmt.Sprintf(`action="/components/jobs/invocations/%d/replay"`, dead),
		fmt.Sprintf(`action="/components/jobs/invocations/%d/discard"`, dead),
		fmt.Sprintf(`href="/components/jobs/invocations/%d"`, ok),
		`<code>POST /fn/jobs/echo</code>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("component page lacks %s", want)
		}
	}
	// The schedule's next run is within the hour.
	sched := page[strings.Index(page, `id="schedules"`):]
	if i := strings.Index(sched, `class="next-run"><time datetime="`); i < 0 {
		t.Errorf("no next run shown:\n%s", sched[:min(len(sched), 800)])
	} else {
		s := sched[i+len(`class="next-run"><time datetime="`):]
		next, err := time.Parse(time.RFC3339, s[:strings.IndexByte(s, '"')])
		if err != nil || next.Before(time.Now().Add(-time.Minute)) || next.After(time.Now().Add(time.Hour+time.Minute)) {
			t.Errorf("next run %v (%v), want within the hour", next, err)
		}
	}
	if strings.Contains(page, fmt.Sprintf(`action="/components/jobs/invocations/%d/replay"`, ok)) {
		t.Error("a succeeded call has a Replay button in the dead list")
	}

	// The succeeded call's page: its attempt and its answer, escaped.
	code, page = b.get(fmt.Sprintf("/components/jobs/invocations/%d", ok))
	if code != 200 {
		t.Fatalf("invocation page: %d\n%s", code, page)
	}
	if strings.Contains(page, hostile) || !strings.Contains(page, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Errorf("the answer body is not shown escaped:\n%s", page)
	}
	if !strings.Contains(page, `<strong id="answer-status">200</strong>`) || !strings.Contains(page, `id="attempts"`) {
		t.Errorf("invocation page lacks the answer status or attempts:\n%s", page)
	}
	// The dead one's page: its error.
	_, page = b.get(fmt.Sprintf("/components/jobs/invocations/%d", dead))
	if !strings.Contains(page, `id="inv-error"`) || !strings.Contains(page, `id="inv-state">dead<`) {
		t.Errorf("dead invocation page:\n%s", page)
	}
	// Under another component's name: not found.
	v.deploy("other", map[string][]byte{"echo.wasm": echoWasm, "velo.toml": []byte("module = \"echo.wasm\"\n")})
	if code, _ := b.get(fmt.Sprintf("/components/other/invocations/%d", ok)); code != http.StatusNotFound {
		t.Errorf("an invocation under another component's name: %d, want 404", code)
	}
	tok := b.csrf()
	if res, _ := b.do(http.MethodPost, fmt.Sprintf("/components/other/invocations/%d/discard", dead), url.Values{"csrf": {tok}}); res.StatusCode != http.StatusNotFound {
		t.Errorf("discard under another component's name: %d, want 404", res.StatusCode)
	}

	// Replay without the CSRF token, or with a wrong one: refused, nothing
	// runs.
	for _, form := range []url.Values{{}, {"csrf": {strings.Repeat("0", len(tok))}}} {
		if res, _ := b.do(http.MethodPost, fmt.Sprintf("/components/jobs/invocations/%d/replay", dead), form); res.StatusCode != http.StatusForbidden {
			t.Errorf("replay with csrf %q: %d, want 403", form.Get("csrf"), res.StatusCode)
		}
		if res, _ := b.do(http.MethodPost, fmt.Sprintf("/components/jobs/invocations/%d/discard", dead), form); res.StatusCode != http.StatusForbidden {
			t.Errorf("discard with csrf %q: %d, want 403", form.Get("csrf"), res.StatusCode)
		}
	}
	if inv, err := v.c.Invocation(v.ctx, dead); err != nil || inv.Attempt != 1 || inv.State != "dead" {
		t.Errorf("after refused actions: %+v %v", inv, err)
	}
	// With it: replayed (one more attempt, dead again), then discarded.
	res, _ := b.do(http.MethodPost, fmt.Sprintf("/components/jobs/invocations/%d/replay", dead), url.Values{"csrf": {tok}})
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Location"), "done=replayed") {
		t.Fatalf("replay: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	v.waitState(dead, "dead", 2)
	res, _ = b.do(http.MethodPost, fmt.Sprintf("/components/jobs/invocations/%d/discard", dead), url.Values{"csrf": {tok}})
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("discard: %d", res.StatusCode)
	}
	var ce *client.Error
	if _, err := v.c.Invocation(v.ctx, dead); !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("the discarded invocation: %v, want not found", err)
	}
	_, page = b.get("/components/jobs")
	if !strings.Contains(page, `<dd id="dead-count">0</dd>`) || strings.Contains(page, fmt.Sprintf(`action="/components/jobs/invocations/%d/replay"`, dead)) {
		t.Errorf("component page after discard still shows the dead call")
	}
}

// A user who cannot reach a component does not find its invocations, on
// their page or their buttons, under its name or their own component's.
func TestQueuedCallsOfAnotherUser(t *testing.T) {
	gh := githubtest.New(t)
	cfg := gh.Config()
	v := startVelo(t, &cfg)
	wasm := string(echoWasm)
	gh.AddUser("alice", 1)
	gh.AddUser("bob", 2)
	for _, r := range []*githubtest.Repo{gh.AddRepo("alice", "site", "main", 1), gh.AddRepo("bob", "site", "main", 2)} {
		r.Commit(map[string]string{"velo.toml": "name = \"" + r.Owner + "-site\"\n" + jobsToml, "echo.wasm": wasm}, "commit")
		res, err := gh.Push(v.ctx, v.n.URL+"/webhooks/github", r, "main", "", "")
		if err != nil || res.StatusCode != http.StatusAccepted {
			t.Fatalf("push %s: %v %v", r.FullName(), res, err)
		}
		name := r.Owner + "-site"
		testsupport.Eventually(t, 30*time.Second, name+" live", func() bool {
			c, err := v.c.Component(v.ctx, name)
			return err == nil && c.Status == "live"
		})
	}
	bobs := v.queue("/fn/bob-site/exit", "bob-private")
	v.waitState(bobs, "dead", 1)

	gh.SignIn("alice")
	a := v.browser()
	a.signInGitHub()
	for _, path := range []string{
		fmt.Sprintf("/components/bob-site/invocations/%d", bobs),
		fmt.Sprintf("/components/alice-site/invocations/%d", bobs),
	} {
		if code, body := a.get(path); code != http.StatusNotFound || strings.Contains(body, "/fn/bob-site/exit") {
			t.Errorf("alice GET %s = %d, want 404", path, code)
		}
	}
	tok := a.csrf()
	for _, path := range []string{
		fmt.Sprintf("/components/bob-site/invocations/%d/replay", bobs),
		fmt.Sprintf("/components/bob-site/invocations/%d/discard", bobs),
		fmt.Sprintf("/components/alice-site/invocations/%d/replay", bobs),
		fmt.Sprintf("/components/alice-site/invocations/%d/discard", bobs),
	} {
		if res, _ := a.do(http.MethodPost, path, url.Values{"csrf": {tok}}); res.StatusCode != http.StatusNotFound {
			t.Errorf("alice POST %s = %d, want 404", path, res.StatusCode)
		}
	}
	if inv, err := v.c.Invocation(v.ctx, bobs); err != nil || inv.Attempt != 1 || inv.State != "dead" {
		t.Errorf("bob's invocation after alice's attempts: %+v %v", inv, err)
	}
	// Her own component's page lists none of bob's calls.
	if code, page := a.get("/components/alice-site"); code != 200 || strings.Contains(page, "/fn/bob-site") || strings.Contains(page, fmt.Sprintf("/invocations/%d\"", bobs)) {
		t.Errorf("alice's component page (%d) shows bob's calls", code)
	}
}
