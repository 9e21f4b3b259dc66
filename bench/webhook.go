package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/node"
)

// webhookPushes is how many timed pushes the webhook section sends.
const webhookPushes = 20

// webhookResult holds the webhook section's samples.
type webhookResult struct {
	push, upload []time.Duration // webhook sent / upload started → new version serving
	ack          []time.Duration // webhook sent → Velo's 202
	polls        []int           // GETs answered by the old version before the new one
	headerMoved  int             // pushes whose first new answer carried a new X-Velo-Deployment
	loads        []string
}

// webhookSection measures push webhook → new WASM version serving, with
// GitHub played by internal/github/githubtest on loopback, against the
// same artifact uploaded straight to the REST API (see bench/README.md).
func webhookSection(ctx context.Context, b *Bench) (_ string, err error) {
	tb := &benchTB{name: "bench-webhook"}
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(tbFatal)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("githubtest: %s", string(f))
		}
		tb.cleanup()
		if err == nil && tb.Failed() {
			err = fmt.Errorf("githubtest: %s", strings.Join(tb.errs, "; "))
		}
	}()
	gh := githubtest.New(tb)
	cfg := gh.Config()
	log := slog.New(slog.NewTextHandler(b.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: filepath.Join(b.Tmp, "velo-webhook"), Logger: log, GitHub: &cfg})
	if err != nil {
		return "", fmt.Errorf("start velo: %w", err)
	}
	v := &Velo{URL: n.URL, Client: client.New(n.URL, n.Token, nil), node: n}
	defer v.Close()

	module, err := os.ReadFile(filepath.Join(b.Root, "bench", "testdata", "hello.wasm"))
	if err != nil {
		return "", err
	}
	const pushed, uploaded = "hello-push", "hello-upload"
	files := func(name, greeting string) map[string]string {
		return map[string]string{
			"velo.toml":  fmt.Sprintf("name = %q\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\ntimeout = \"10s\"\n\n[env]\nGREETING = %q\n", name, greeting),
			"hello.wasm": string(module),
		}
	}
	repo := gh.AddRepo("bench", "hello-push", "main", 42)
	hook := n.URL + github.WebhookPath
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	res := &webhookResult{loads: []string{loadavg()}}

	// One push: commit, deliver, poll GET every ms until the new greeting
	// answers.
	push := func(k int) (time.Duration, error) {
		greeting := fmt.Sprintf("push-%d", k)
		sha := repo.Commit(files(pushed, greeting), "bench "+greeting)
		payload := gh.PushPayload(repo, "main", "", sha)
		prev := lastDeployment(ctx, hc, v.URL+"/fn/"+pushed+"/")
		start := time.Now()
		resp, err := gh.Deliver(ctx, hook, "push", payload)
		if err != nil {
			return 0, err
		}
		res.ack = append(res.ack, time.Since(start))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return 0, fmt.Errorf("webhook answered %s, want 202", resp.Status)
		}
		d, polls, dep, err := pollServing(ctx, hc, v.URL+"/fn/"+pushed+"/", greeting+" from Velo!", start)
		if err != nil {
			return 0, fmt.Errorf("push %s (%.7s): %w", greeting, sha, err)
		}
		res.polls = append(res.polls, polls)
		if dep != prev {
			res.headerMoved++
		}
		// Let the job finish reporting to GitHub before the next push.
		waitSettled(ctx, gh, repo, sha)
		return d, nil
	}
	dir := filepath.Join(b.Tmp, "components", uploaded)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	upload := func(k int) (time.Duration, error) {
		greeting := fmt.Sprintf("upload-%d", k)
		for f, body := range files(uploaded, greeting) {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
				return 0, err
			}
		}
		var buf bytes.Buffer
		if err := archive.Pack(&buf, dir); err != nil {
			return 0, err
		}
		start := time.Now()
		if _, err := v.Client.Deploy(ctx, uploaded, &buf); err != nil {
			return 0, err
		}
		d, _, _, err := pollServing(ctx, hc, v.URL+"/fn/"+uploaded+"/", greeting+" from Velo!", start)
		return d, err
	}

	// Warm-up, untimed: the first push creates the component and the
	// first upload the other; both modules are compiled once here.
	b.logf("webhook: warm-up push and upload")
	if _, err := push(0); err != nil {
		return "", err
	}
	res.ack, res.polls, res.headerMoved = nil, nil, 0
	if _, err := upload(0); err != nil {
		return "", err
	}
	b.logf("webhook: %d pushes and %d uploads, alternating", webhookPushes, webhookPushes)
	deadline := time.Now().Add(5 * time.Minute)
	for k := 1; k <= webhookPushes && time.Now().Before(deadline); k++ {
		order := []bool{k%2 == 1, k%2 == 0}
		for _, isPush := range order {
			time.Sleep(50 * time.Millisecond)
			if isPush {
				d, err := push(k)
				if err != nil {
					return "", err
				}
				res.push = append(res.push, d)
			} else {
				d, err := upload(k)
				if err != nil {
					return "", fmt.Errorf("upload %d: %w", k, err)
				}
				res.upload = append(res.upload, d)
			}
		}
		b.logf("  %d/%d: push → serving %s · upload → serving %s", k, webhookPushes,
			fmtDur(res.push[len(res.push)-1]), fmtDur(res.upload[len(res.upload)-1]))
	}
	res.loads = append(res.loads, loadavg())
	return webhookReport(b, res), nil
}

// pollServing GETs url every millisecond, for up to 30s, until the body
// holds want, and returns the time since start, the number of answers that
// did not hold it and the X-Velo-Deployment of the one that did.
func pollServing(ctx context.Context, hc *http.Client, url, want string, start time.Time) (time.Duration, int, string, error) {
	deadline := start.Add(30 * time.Second)
	polls := 0
	for {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return 0, 0, "", err
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(want)) {
				return time.Since(start), polls, resp.Header.Get("X-Velo-Deployment"), nil
			}
		}
		polls++
		if time.Now().After(deadline) {
			return 0, polls, "", fmt.Errorf("%q not served within 30s", want)
		}
		select {
		case <-ctx.Done():
			return 0, polls, "", ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// lastDeployment is the X-Velo-Deployment url answers with now, or "".
func lastDeployment(ctx context.Context, hc *http.Client, url string) string {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return ""
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Velo-Deployment")
}

// waitSettled waits, up to 20s, until the GitHub deployment of sha has a
// final status, so that one push's reporting does not overlap the next.
func waitSettled(ctx context.Context, gh *githubtest.Server, repo *githubtest.Repo, sha string) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		for _, d := range gh.Deployments(repo.Owner, repo.Name) {
			if d.SHA == sha && len(d.Statuses) >= 2 {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func webhookReport(b *Bench, r *webhookResult) string {
	var s strings.Builder
	fmt.Fprintf(&s, "## webhook — push webhook → new WASM version serving\n\n")
	fmt.Fprintf(&s, "%s\n\n", b.Stamp())
	fmt.Fprintf(&s, "GitHub is `internal/github/githubtest` on loopback (App JWT, installation token, `GET /repos/{owner}/{repo}/tarball/{sha}` "+
		"answered with a 302 to its codeload stand-in, deployments and statuses), so the tarball is served locally. Velo runs in the bench process "+
		"(`node.Start` with the stand-in's App configuration, embedded SQLite, hit recording on). The repository holds `bench/testdata/hello.wasm` "+
		"and a `velo.toml` whose `[env] GREETING` changes with every commit, so every push is a new artifact that has to be fetched, stored, "+
		"placed and prepared (the compiled module comes from the disk cache: the module bytes never change).\n\n")
	fmt.Fprintf(&s, "Each push: commit in the stand-in, then the timer starts as the stand-in sends the signed `push` delivery "+
		"(`githubtest.Server.Deliver`, as `Push` does) to `/webhooks/github`; "+
		"right after the 202 the bench polls `GET /fn/hello-push/` every 1 ms on a keep-alive connection until the body carries the new greeting. "+
		"Before the next push it waits for the job's final GitHub deployment status, so reporting does not overlap the next push. "+
		"The peer, alternating with the pushes: the same files uploaded straight to the REST API as another component "+
		"(`POST /api/v1/components/hello-upload/deployments`, what `velo deploy` does) and polled the same way — the floor of Velo's deploy path, "+
		"so the difference is what the GitHub path adds. One warm-up push and upload, untimed, then %d of each.\n\n", len(r.push))
	t := b.newTable("")
	p50, u50 := percentile(r.push, 50), percentile(r.upload, 50)
	t.add(fmt.Sprintf("push webhook → new version serving p50 (n=%d)", len(r.push)), fmtDur(p50), fmtDur(u50), fmtDiff(p50-u50), "≤ 500 ms", verdict(p50 <= 500*time.Millisecond))
	p99, u99 := percentile(r.push, 99), percentile(r.upload, 99)
	t.add("push webhook → new version serving p99", fmtDur(p99), fmtDur(u99), fmtDiff(p99-u99), "", info)
	t.add("webhook answered (202) p50", fmtDur(percentile(r.ack, 50)), "", "", "≤ 1 s", verdict(percentile(r.ack, 50) <= time.Second))
	fmt.Fprintf(&s, "%s\n", t)
	fmt.Fprintf(&s, "Every push's first new answer carried a new `X-Velo-Deployment`: %d of %d. Old-version answers before the new one, median: %d. "+
		"Samples, ms — push: %s; upload: %s. Load average at start and end: %s.\n",
		r.headerMoved, len(r.push), median(intsToInt64(r.polls)), fmtMillis(r.push), fmtMillis(r.upload), strings.Join(r.loads, " · "))
	return s.String()
}

func intsToInt64(xs []int) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = int64(x)
	}
	return out
}

// benchTB lets githubtest, written for tests, run in the benchmark: Fatal
// panics with tbFatal (recovered by the section), Error is recorded, and
// cleanups run when the section ends. Any other testing.TB method panics
// on the nil embedded interface.
type benchTB struct {
	testing.TB
	name     string
	cleanups []func()

	mu   sync.Mutex // Errorf may be called from the stand-in's handlers
	errs []string
}

type tbFatal string

func (t *benchTB) Helper()                           {}
func (t *benchTB) Name() string                      { return t.name }
func (t *benchTB) Cleanup(f func())                  { t.cleanups = append(t.cleanups, f) }
func (t *benchTB) Log(args ...any)                   {}
func (t *benchTB) Logf(format string, args ...any)   {}
func (t *benchTB) Errorf(format string, args ...any) { t.Error(fmt.Sprintf(format, args...)) }
func (t *benchTB) Error(args ...any) {
	t.mu.Lock()
	t.errs = append(t.errs, fmt.Sprint(args...))
	t.mu.Unlock()
}
func (t *benchTB) Fatalf(format string, args ...any) { panic(tbFatal(fmt.Sprintf(format, args...))) }
func (t *benchTB) Fatal(args ...any)                 { panic(tbFatal(fmt.Sprint(args...))) }
func (t *benchTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.errs) > 0
}

func (t *benchTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}
