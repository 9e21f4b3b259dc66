package webui_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/velo-run/velo/internal/testsupport"
)

// The dashboard in a real headless Chromium (Debian's chromium), driven
// with chromedp, against a whole in-process Velo serving the C WAGI test
// module.

// chromium finds the browser. In CI a missing browser fails the test;
// elsewhere it skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testsupport.Need(t, "Chromium", errors.New("none of chromium, chromium-browser, google-chrome is on PATH (apt-get install chromium)"))
	return ""
}

// tab is one browser tab on a Velo.
type tab struct {
	t   *testing.T
	v   *velo
	ctx context.Context
	dir string
	// base is where the tab reaches Velo, when not at its own address
	// (behind a TLS-terminating proxy; the dashboard of a cluster, v nil).
	base string
}

func newTab(t *testing.T, v *velo, extra ...chromedp.ExecAllocatorOption) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 900),
	)
	opts = append(opts, extra...)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	// The first Run starts the browser; it must not have a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &tab{t: t, v: v, ctx: ctx, dir: artifacts(t)}
}

// do runs steps with a time limit.
func (b *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func run[T any](b *tab, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %v", err)
	}
	return v
}

func (b *tab) open(path string) {
	b.t.Helper()
	base := b.base
	if base == "" {
		base = b.v.n.URL
	}
	b.do(chromedp.Navigate(base+path), chromedp.WaitReady(chromedp.CSS("body")))
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	return run(b, chromedp.Text(chromedp.CSS(sel)))
}

func (b *tab) eval(js string) string {
	b.t.Helper()
	return run(b, chromedp.Evaluate[string](js))
}

func (b *tab) shot(name string) {
	b.t.Helper()
	png := run(b, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// waitFor polls a JavaScript condition on the page.
func (b *tab) waitFor(what, cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting for %s: %v\npage: %s", what, err, b.eval(`document.body.innerText`))
	}
}

// hitsShown is the hits total in the component page's hit graph legend.
func (b *tab) hitsShown() int {
	b.t.Helper()
	s := strings.ReplaceAll(b.text(".chart .legend li:first-child strong"), ",", "")
	n, err := strconv.Atoi(s)
	if err != nil {
		b.t.Fatalf("hits legend %q: %v", s, err)
	}
	return n
}

// unlabelled lists controls with no accessible name: buttons without text
// or aria-label, inputs without a label, links without text.
const unlabelled = `(() => {
  const bad = [];
  for (const el of document.querySelectorAll("button, a, input:not([type=hidden]), select, textarea")) {
    const name = (el.getAttribute("aria-label") || el.textContent || "").trim();
    if (el.matches("input, select, textarea")) {
      if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label")) bad.push(el.outerHTML);
    } else if (!name) bad.push(el.outerHTML);
  }
  return bad.join("\n");
})()`

// overflow is "" when nothing sticks out sideways at the current width.
const overflow = `(() => {
  const w = window.innerWidth, sw = document.documentElement.scrollWidth;
  if (sw <= w) return "";
  const wide = [...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > w + 1).slice(0, 5).map(e => e.tagName + "." + e.className);
  return "scrollWidth " + sw + " > innerWidth " + w + ": " + wide.join(", ");
})()`

func TestDashboardInChromium(t *testing.T) {
	v := startVelo(t, nil)
	b := newTab(t, v)
	v.deploy("echo", echoFiles(map[string]string{"GREETING": "hello", "API_KEY": "sk-test-123"}))
	b.do(chromedp.EmulateViewport(1280, 900))

	// Signed out: the sign-in page, nothing about any component.
	b.open("/")
	if body := b.eval(`document.body.innerText`); !strings.Contains(body, "Sign in to Velo") || strings.Contains(body, "echo") {
		t.Fatalf("signed-out page:\n%s", body)
	}
	if got := b.eval(`document.querySelector("form[action='/login'] label").textContent`); got != "Admin token" {
		t.Errorf("token field label = %q", got)
	}
	b.shot("signin")

	// The one-click link signs in and shows the list.
	b.do(chromedp.Navigate(v.n.LoginURL), chromedp.WaitVisible(chromedp.CSS(".comps")))
	if loc := run(b, chromedp.Location()); loc != v.n.URL+"/" {
		t.Errorf("after sign-in at %s: the token should leave the address bar", loc)
	}
	if got := b.text(".comp .c-name"); got != "echo" {
		t.Fatalf("listed component = %q", got)
	}
	if got := b.text(".comp .status"); got != "live" {
		t.Errorf("list status = %q, want live", got)
	}
	if got := b.text(".comp .c-url"); got != v.n.URL+"/fn/echo/" {
		t.Errorf("list URL = %q", got)
	}
	b.shot("list")

	// The component page; its log tail is live.
	b.do(chromedp.Click(chromedp.CSS(".comp .c-name")), chromedp.WaitVisible(chromedp.CSS("#graphs")))
	b.waitFor("the log tail to connect", `document.getElementById("log-state").textContent === "live"`)
	if n := b.eval(`String(document.querySelectorAll("#log li.log-stderr").length)`); n != "0" {
		t.Fatalf("stderr lines before any request: %s", n)
	}
	hits0 := b.hitsShown()

	// A request that writes to stderr: its lines arrive without a reload.
	if code, _ := v.get("/fn/echo/stderr"); code != 200 {
		t.Fatalf("GET /fn/echo/stderr = %d", code)
	}
	b.waitFor("the stderr line in the live tail", `[...document.querySelectorAll("#log li.log-stderr .line")].some(l => l.textContent === "first line")`)

	// More requests: the hit graph grows (hits are flushed every second).
	for range 9 {
		if code, _ := v.get("/fn/echo/env"); code != 200 {
			t.Fatalf("GET /fn/echo/env = %d", code)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		b.do(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#graphs")))
		if b.hitsShown() >= hits0+10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hit graph shows %d hits, want ≥ %d", b.hitsShown(), hits0+10)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if d := b.eval(`document.querySelector(".line-hits").getAttribute("d")`); !strings.Contains(d, "L") {
		t.Errorf("hit line path = %q", d)
	}
	if label := b.eval(`document.querySelector("#graphs svg").getAttribute("aria-label")`); !strings.Contains(label, fmt.Sprintf("%d hits", hits0+10)) {
		t.Errorf("hit graph label = %q", label)
	}
	b.do(chromedp.WaitVisible(chromedp.CSS("#log li.log-stderr")))
	b.shot("component")
	// The list's sparkline and count follow.
	b.open("/")
	if got := b.text(".comp .hits strong"); got != strconv.Itoa(hits0+10) {
		t.Errorf("list shows %s hits, want %d", got, hits0+10)
	}
	if pts := b.eval(`document.querySelector(".spark polyline").getAttribute("points")`); strings.Count(pts, ",100.00") == strings.Count(pts, ",") {
		t.Errorf("sparkline flat after hits: %q", pts)
	}
	b.open("/components/echo")

	// 24 hours.
	b.do(chromedp.Click(chromedp.CSS(`.toggle a[href="?range=24h"]`)), chromedp.WaitVisible(chromedp.CSS(`.toggle a[aria-current="page"][href="?range=24h"]`)))
	if from := b.text(".xaxis span"); from != "24 h ago" {
		t.Errorf("24h graph starts %q", from)
	}

	// Environment values are masked until revealed.
	if vis := b.eval(`String(document.querySelector("#log") && [...document.querySelectorAll(".env .secret")].every(s => s.hidden && s.offsetParent === null))`); vis != "true" {
		t.Errorf("env values visible before reveal")
	}
	b.do(chromedp.Click(chromedp.CSS(`button[aria-label="Reveal API_KEY"]`)))
	if got := b.text(`.env dd:has(button[aria-label="Reveal API_KEY"]) .secret`); got != "sk-test-123" {
		t.Errorf("revealed API_KEY = %q", got)
	}

	// Pause: the URL answers 503 and the page says paused.
	b.do(chromedp.Click(chromedp.CSS("#pause")), chromedp.WaitVisible(chromedp.CSS("#resume")))
	if got := b.text("#status"); got != "paused" {
		t.Errorf("status after pause = %q", got)
	}
	if !strings.Contains(b.text(".flash"), "Paused") {
		t.Errorf("no pause confirmation")
	}
	if code, body := v.get("/fn/echo/env"); code != http.StatusServiceUnavailable {
		t.Errorf("paused component answered %d %q, want 503", code, body)
	}
	b.shot("paused")
	b.open("/")
	if got := b.text(".comp .status"); got != "paused" {
		t.Errorf("list status while paused = %q", got)
	}

	// Resume.
	b.open("/components/echo")
	b.do(chromedp.Click(chromedp.CSS("#resume")), chromedp.WaitVisible(chromedp.CSS("#pause")))
	if got := b.text("#status"); got != "live" {
		t.Errorf("status after resume = %q", got)
	}
	if code, _ := v.get("/fn/echo/env"); code != 200 {
		t.Errorf("resumed component answered %d", code)
	}

	// Labelled controls, no sideways scrolling at phone width.
	for _, page := range []string{"/", "/components/echo", "/new"} {
		b.open(page)
		if bad := b.eval(unlabelled); bad != "" {
			t.Errorf("%s: controls without a label:\n%s", page, bad)
		}
	}
	b.do(chromedp.EmulateViewport(390, 844))
	for _, page := range []struct{ path, shot string }{{"/", "phone-list"}, {"/components/echo", "phone-component"}, {"/new", "phone-new"}} {
		b.open(page.path)
		if o := b.eval(overflow); o != "" {
			t.Errorf("%s at 390px: %s", page.path, o)
		}
		b.shot(page.shot)
	}
	b.do(chromedp.EmulateViewport(1280, 900))

	// Roll back to the first deployment after a second one.
	first := mustDeployments(t, v, "echo")[0]
	v.deploy("echo", echoFiles(map[string]string{"GREETING": "second"}))
	b.open("/components/echo")
	sel := fmt.Sprintf(`button[aria-label="Roll back to deployment %d"]`, first.ID)
	b.do(chromedp.Click(chromedp.CSS(sel)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	testsupport.Eventually(t, 15*time.Second, "the rollback to go live", func() bool {
		c, err := v.c.Component(v.ctx, "echo")
		return err == nil && c.Live != nil && c.Live.ID == first.ID
	})
	testsupport.Eventually(t, 15*time.Second, "the first version to serve", func() bool {
		_, body := v.get("/fn/echo/env")
		return strings.Contains(body, "GREETING=hello")
	})

	// The build log of a deployment.
	b.open(fmt.Sprintf("/components/echo/deployments/%d", first.ID))
	if got := b.text(".buildlog"); !strings.Contains(got, "rollback") {
		t.Errorf("build log of #%d: %q", first.ID, got)
	}

	// Delete asks for the name.
	b.open("/components/echo")
	if dis := b.eval(`String(document.getElementById("delete").disabled)`); dis != "true" {
		t.Errorf("delete enabled before the name is typed")
	}
	b.do(chromedp.SendKeys(chromedp.CSS("#confirm"), "echo"), chromedp.Click(chromedp.CSS("#delete")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(".flash"); !strings.Contains(got, "deleted") {
		t.Errorf("after delete: %q", got)
	}
	if n := b.eval(`String(document.querySelectorAll(".comp").length)`); n != "0" {
		t.Errorf("components listed after delete: %s", n)
	}
	b.shot("empty")
	if code, _ := v.get("/fn/echo/env"); code != http.StatusNotFound {
		t.Errorf("deleted component answered %d", code)
	}
	t.Logf("screenshots in %s", b.dir)
}
