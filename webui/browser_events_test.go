package webui_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// The queued calls in Chromium: the component page shows the counts, the
// schedule and the dead call; Replay runs it once more and the call's page
// shows both attempts; Discard drops it from the page.
func TestQueuedCallsInChromium(t *testing.T) {
	v := startVelo(t, nil)
	b := newTab(t, v)
	v.deploy("jobs", map[string][]byte{"echo.wasm": echoWasm, "velo.toml": []byte(jobsToml)})
	dead := v.queue("/fn/jobs/exit", "")
	ok := v.queue("/fn/jobs/echo", hostile)
	v.waitState(dead, "dead", 1)
	v.waitState(ok, "succeeded", 1)
	b.do(chromedp.EmulateViewport(1280, 900))
	b.do(chromedp.Navigate(v.n.LoginURL), chromedp.WaitVisible(chromedp.CSS(".comps")))

	b.open("/components/jobs")
	if got := b.text("#dead-count"); got != "1" {
		t.Errorf("dead count = %q", got)
	}
	if got := b.text("#schedules .next-run"); !strings.HasPrefix(got, "in ") {
		t.Errorf("schedule's next run = %q, want in …", got)
	}
	if got := b.text("#dead tbody tr td:nth-child(4)"); got != "POST /fn/jobs/exit" {
		t.Errorf("dead call = %q", got)
	}
	if bad := b.eval(unlabelled); bad != "" {
		t.Errorf("controls without a label:\n%s", bad)
	}
	b.shot("queued-calls")

	// Replay: the call's page, a second attempt, dead again.
	b.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[aria-label="Replay call %d"]`, dead))), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(".flash"); !strings.Contains(got, "Replayed") {
		t.Errorf("after Replay: %q", got)
	}
	v.waitState(dead, "dead", 2)
	b.open(fmt.Sprintf("/components/jobs/invocations/%d", dead))
	if n := b.eval(`String(document.querySelectorAll("#attempts tbody tr").length)`); n != "2" {
		t.Errorf("attempts shown = %s, want 2", n)
	}
	b.shot("invocation-dead")

	// The succeeded call's answer is text, not markup.
	b.open(fmt.Sprintf("/components/jobs/invocations/%d", ok))
	if got := b.text("#answer-body"); got != hostile {
		t.Errorf("answer body shown = %q", got)
	}
	if n := b.eval(`String(document.querySelectorAll("#answer-body *").length)`); n != "0" {
		t.Errorf("the answer body made %s elements", n)
	}

	// Discard from the component page.
	b.open("/components/jobs")
	b.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[aria-label="Discard call %d"]`, dead))), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(".flash"); !strings.Contains(got, "Discarded") {
		t.Errorf("after Discard: %q", got)
	}
	if got := b.text("#dead-count"); got != "0" {
		t.Errorf("dead count after discard = %q", got)
	}
	b.do(chromedp.EmulateViewport(390, 844))
	b.open("/components/jobs")
	if o := b.eval(overflow); o != "" {
		t.Errorf("component page at 390px: %s", o)
	}
	b.open(fmt.Sprintf("/components/jobs/invocations/%d", ok))
	if o := b.eval(overflow); o != "" {
		t.Errorf("invocation page at 390px: %s", o)
	}
	b.shot("phone-invocation")
}
