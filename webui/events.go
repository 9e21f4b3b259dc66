package webui

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/velo-run/velo/internal/api"
)

// The component page's queued calls (Prefer: respond-async, inbound events,
// schedule ticks) and an invocation's own page, read through the
// invocations API like everything else.

// recentInvocations is how many of a component's newest queued calls its
// page lists (the dead ones are listed apart, up to as many).
const recentInvocations = 20

// componentEvents reads the component page's queued calls: its dead ones
// and its newest. Only when the server runs the event engine (the
// component's Events counts say so).
func (u *UI) componentEvents(r *http.Request, p *componentPage) error {
	if p.C.Events == nil {
		return nil
	}
	lim := "&limit=" + strconv.Itoa(recentInvocations)
	if err := u.call(r, http.MethodGet, componentPath(p.C.Name, "/invocations?state=dead"+lim), "", nil, &p.Dead); err != nil {
		return err
	}
	return u.call(r, http.MethodGet, componentPath(p.C.Name, "/invocations?"+lim[1:]), "", nil, &p.Recent)
}

type invocationPage struct {
	base
	Name string
	I    api.Invocation
	// Body is the answer's body as text when it is UTF-8 (the template
	// escapes it); Binary says it is not, and it is not shown.
	Body   string
	Binary bool
}

// invocation shows one queued call: its attempts, state and final answer.
func (u *UI) invocation(w http.ResponseWriter, r *http.Request, v visitor) {
	var inv api.Invocation
	name, id, ok := u.componentItem(w, r, "invocation", &inv, func() string { return inv.Component })
	if !ok {
		return
	}
	p := invocationPage{base: base{Title: fmt.Sprintf("%s call %d", name, id), visitor: v, Flash: flashes[r.URL.Query().Get("done")]}, Name: name, I: inv}
	if a := inv.Answer; a != nil && len(a.Body) > 0 {
		if utf8.Valid(a.Body) {
			p.Body = string(a.Body)
		} else {
			p.Binary = true
		}
	}
	u.render(w, http.StatusOK, "invocation", p)
}

// invocationAct serves the Replay and Discard buttons of queued calls.
func (u *UI) invocationAct(w http.ResponseWriter, r *http.Request, v visitor) {
	csrf, ok := u.checkForm(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		u.fail(w, r, http.StatusNotFound, "There is no such invocation.")
		return
	}
	path := "/api/v1/invocations/" + strconv.FormatInt(id, 10)
	// The invocation must be this component's: the URL names both.
	var inv api.Invocation
	if err := u.call(r, http.MethodGet, path, "", nil, &inv); err != nil {
		u.failAPI(w, r, err)
		return
	}
	if inv.Component != name {
		u.fail(w, r, http.StatusNotFound, fmt.Sprintf("Not found: component %q has no invocation %d.", name, id))
		return
	}
	back := "/components/" + url.PathEscape(name)
	switch r.PathValue("action") {
	case "replay":
		err = u.call(r, http.MethodPost, path+"/replay", csrf, nil, nil)
		back += "/invocations/" + strconv.FormatInt(id, 10) + "?done=replayed"
	case "discard":
		err = u.call(r, http.MethodDelete, path, csrf, nil, nil)
		back += "?done=discarded#invocations"
	default:
		u.fail(w, r, http.StatusNotFound, "There is no such action.")
		return
	}
	if err != nil {
		u.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// ms writes a duration in milliseconds, as the API gives it.
func ms(f float64) string {
	if f < 10 {
		return strconv.FormatFloat(f, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(f, 'f', 0, 64) + " ms"
}

// until says how far off t is, roughly ("in 4m"), or how long ago.
func until(t time.Time) string {
	d := time.Until(t)
	switch {
	case d < 0:
		return ago(t)
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("in %ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("in %dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("in %dh", int(d.Hours()))
	default:
		return fmt.Sprintf("in %dd", int(d.Hours()/24))
	}
}
