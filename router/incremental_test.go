package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// dump is a table as text: every route with what it serves and how, the
// custom domains and the API keys, in order, for comparing two tables.
func dump(t *table) string {
	var b strings.Builder
	names := make([]string, 0, len(t.routes))
	for n := range t.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	workers := func(ts []target) string {
		var ws []string
		for _, t := range ts {
			ws = append(ws, t.worker[0])
		}
		return strings.Join(ws, ",")
	}
	for _, n := range names {
		rt := t.routes[n]
		fmt.Fprintf(&b, "route %s paused=%v dep=%d targets=[%s] warming=[%s] wait=%s timeout=%s fast=%v sched=%d events=%+v",
			n, rt.paused, rt.depID, workers(rt.targets), workers(rt.warming), rt.wait, rt.timeout, rt.fast, len(rt.sched), rt.events)
		if g := rt.gate; g != nil {
			fmt.Fprintf(&b, " gate(private=%v jwt=%v", g.private, g.jwt != nil)
			if g.limit != nil {
				fmt.Fprintf(&b, " limit=%+v", g.limit.cfg)
			}
			b.WriteString(")")
		}
		if c := rt.canary; c != nil {
			fmt.Fprintf(&b, " canary(dep=%d weight=%d targets=[%s])", c.depID, rt.weight, workers(c.targets))
		}
		b.WriteString("\n")
	}
	var hosts []string
	for h, c := range t.hosts {
		hosts = append(hosts, h+"→"+c)
	}
	sort.Strings(hosts)
	fmt.Fprintf(&b, "hosts %v\n", hosts)
	var keys []string
	for h, k := range t.keys {
		keys = append(keys, fmt.Sprintf("%x→%s/%s/%s", h[:4], k.component, k.id, k.label))
	}
	sort.Strings(keys)
	fmt.Fprintf(&b, "keys %v\n", keys)
	return b.String()
}

// TestIncrementalRefreshMatchesFull: after every change to one component
// (new deployments whose manifests list other domains and gateways,
// domains claimed, moved to another component and released, placements
// ready, pending and gone, pause, canaries, API keys, deletion and
// re-creation), a router that reads only that component again
// (RefreshComponents) has the same table as one that reads everything
// (Refresh).
func TestIncrementalRefreshMatchesFull(t *testing.T) {
	f := newFixture(t, Config{Domain: "apps.example.test"})
	ctx := context.Background()
	st := f.st.Store
	full := New(Config{Domain: "apps.example.test", Backend: func(w store.Worker) Backend { return f.backends[w.Name] }}, st)
	inc := f.r
	if err := inc.Refresh(ctx); err != nil { // the start-up read
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(11, 13))
	comps := []string{"a", "b", "c", "d"}
	domains := []string{"one.custom.test", "two.custom.test", "three.custom.test"}
	manifests := []string{
		`{}`,
		`{"timeout":3000000000}`,
		`{"access":{}}`,
		`{"access":{"jwks":"http://127.0.0.1:1/jwks","issuer":"i","audience":"a"}}`,
		`{"limits":{"count":5,"per":1000000000,"burst":10,"by":"ip"}}`,
		`{"events":{"max_attempts":2},"schedules":[{"cron":"* * * * *"}]}`,
		`{"validate":true}`,
	}
	subset := func(all []string) []string {
		var out []string
		for _, d := range all {
			if rng.IntN(2) == 0 {
				out = append(out, d)
			}
		}
		return out
	}
	quoted := func(ds []string) string {
		q := make([]string, len(ds))
		for i, d := range ds {
			q[i] = `"` + d + `"`
		}
		return strings.Join(q, ",")
	}
	deps := map[string][]int64{}
	keys := map[string][]string{}
	digest := 0
	for step := range 400 {
		c := comps[rng.IntN(len(comps))]
		_, err := st.Component(ctx, c)
		exists := err == nil
		var op string
		if !exists {
			op = "create"
		} else {
			op = []string{"deploy", "deploy", "claim", "place", "place", "unplace", "pause", "canary", "key", "unkey", "delete"}[rng.IntN(11)]
		}
		must := func(err error) {
			t.Helper()
			var taken *store.DomainTakenError
			if err != nil && !errors.As(err, &taken) && !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("step %d %s %s: %v", step, op, c, err)
			}
		}
		switch op {
		case "create":
			must(st.CreateComponent(ctx, store.Component{Name: c, Runtime: "wasm"}))
			deps[c], keys[c] = nil, nil
		case "deploy":
			digest++
			m := manifests[rng.IntN(len(manifests))]
			m = strings.TrimSuffix(m, "}")
			if m != "{" {
				m += ","
			}
			m += `"domains":[` + quoted(subset(domains)) + `]}`
			d, err := st.CreateDeployment(ctx, store.Deployment{Component: c, Digest: fmt.Sprintf("%064d", digest), Runtime: "wasm",
				Manifest: []byte(m), Source: "upload", Status: store.StatusReady})
			must(err)
			deps[c] = append(deps[c], d.ID)
			for _, w := range subset([]string{"w1", "w2"}) {
				state := store.PlacementReady
				if rng.IntN(3) == 0 {
					state = store.PlacementPending
				}
				must(st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: w, State: state}))
			}
			must(st.SetTarget(ctx, c, d.ID))
			must(st.Promote(ctx, c, d.ID))
		case "claim":
			must(st.ClaimDomains(ctx, c, subset(domains), nil))
		case "place", "unplace":
			if len(deps[c]) == 0 {
				continue
			}
			d := deps[c][rng.IntN(len(deps[c]))]
			w := []string{"w1", "w2"}[rng.IntN(2)]
			if op == "unplace" {
				must(st.DeletePlacement(ctx, d, w))
			} else {
				must(st.PutPlacement(ctx, store.Placement{Deployment: d, Worker: w, State: []string{store.PlacementReady, store.PlacementPending, store.PlacementFailed}[rng.IntN(3)]}))
			}
		case "pause":
			must(st.SetPaused(ctx, c, rng.IntN(2) == 0))
		case "canary":
			if len(deps[c]) == 0 {
				continue
			}
			must(st.SetCanary(ctx, c, deps[c][rng.IntN(len(deps[c]))], rng.IntN(100)))
		case "key":
			id := fmt.Sprintf("k%d", step)
			sum := sha256.Sum256([]byte(id))
			must(st.CreateAPIKey(ctx, store.APIKey{ID: id, Component: c, Label: "l" + id, Hash: hex.EncodeToString(sum[:])}))
			keys[c] = append(keys[c], id)
		case "unkey":
			if len(keys[c]) == 0 {
				continue
			}
			i := rng.IntN(len(keys[c]))
			must(st.DeleteAPIKey(ctx, c, keys[c][i]))
			keys[c] = slices.Delete(keys[c], i, i+1)
		case "delete":
			must(st.DeleteComponent(ctx, c))
		}
		if err := inc.RefreshComponents(ctx, c); err != nil {
			t.Fatalf("step %d: refresh %s: %v", step, c, err)
		}
		if err := full.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if got, want := dump(inc.table.Load()), dump(full.table.Load()); got != want {
			t.Fatalf("step %d, %s of %s: the table read for %s alone differs from the whole one:\n%s\nwant:\n%s", step, op, c, c, got, want)
		}
	}
	// The table was not trivially empty all along.
	if d := dump(inc.table.Load()); !strings.Contains(d, "route ") || !strings.Contains(d, "custom.test→") {
		t.Errorf("final table has no routes or no domains: %s", d)
	}
}

// TestRunFollowsComponentNotes: through Run, a note naming a component
// brings its change into the table (a new live deployment, a domain moved
// to it, its deletion) with no resync to help (Resync is an hour); a
// change whose note was lost is healed by the whole read at the next
// resync (here short).
func TestRunFollowsComponentNotes(t *testing.T) {
	f := newFixture(t, Config{Resync: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	st := f.st.Store
	done := make(chan error, 1)
	go func() { done <- f.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Run's first read is in once an unrelated component is served.
	f.deploy("first", "w1")
	testsupport.Eventually(t, 30*time.Second, "the first table read", func() bool { _, ok := f.r.Lookup("first"); return ok })

	create := func(name, manifest string) int64 {
		t.Helper()
		if err := st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil && !errors.Is(err, store.ErrConflict) {
			t.Fatal(err)
		}
		d, err := st.CreateDeployment(ctx, store.Deployment{Component: name, Digest: fmt.Sprintf("%064d", 2), Runtime: "wasm",
			Manifest: []byte(manifest), Source: "upload", Status: store.StatusReady})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w2", State: store.PlacementReady}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetTarget(ctx, name, d.ID); err != nil {
			t.Fatal(err)
		}
		if err := st.Promote(ctx, name, d.ID); err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	notify := func(name string) {
		t.Helper()
		if err := st.Notify(ctx, store.RoutesChangedFor(name)); err != nil {
			t.Fatal(err)
		}
	}
	host := func(h string) string { return f.r.table.Load().hosts[h] }

	d := create("web", `{"domains":["web.custom.test"]}`)
	if err := st.ClaimDomains(ctx, "web", []string{"web.custom.test"}, nil); err != nil {
		t.Fatal(err)
	}
	notify("web")
	testsupport.Eventually(t, 30*time.Second, "a note naming web brings its live deployment and domain", func() bool {
		got, ok := f.r.Lookup("web")
		return ok && got == d && host("web.custom.test") == "web"
	})

	// The domain moves to api (web's new deployment no longer lists it).
	d2 := create("web", `{}`)
	if err := st.ClaimDomains(ctx, "web", nil, nil); err != nil {
		t.Fatal(err)
	}
	create("api", `{"domains":["web.custom.test"]}`)
	if err := st.ClaimDomains(ctx, "api", []string{"web.custom.test"}, nil); err != nil {
		t.Fatal(err)
	}
	notify("api")
	notify("web")
	testsupport.Eventually(t, 30*time.Second, "the domain moved from web to api", func() bool {
		got, ok := f.r.Lookup("web")
		return ok && got == d2 && host("web.custom.test") == "api"
	})

	if err := st.DeleteComponent(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	notify("web")
	testsupport.Eventually(t, 30*time.Second, "a note naming deleted web takes it out of the table", func() bool {
		_, ok := f.r.table.Load().routes["web"]
		return !ok
	})
	if host("web.custom.test") != "api" {
		t.Errorf("deleting web took api's domain: hosts %v", f.r.table.Load().hosts)
	}

	// A change whose note never came stays unseen until a whole read.
	if err := st.SetPaused(ctx, "api", true); err != nil {
		t.Fatal(err)
	}
	notify("first") // a note for another component does not read api
	time.Sleep(200 * time.Millisecond)
	if f.r.table.Load().routes["api"].paused {
		t.Fatal("api's pause reached the table without a note or a resync: the test shows nothing")
	}
	if err := st.Notify(ctx, store.RoutesChanged()); err != nil { // a resync note
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "a resync note heals the missed change", func() bool { return f.r.table.Load().routes["api"].paused })
}

// TestResyncHealsMissedNote: with no note at all, the periodic whole read
// (Config.Resync) brings a component's change into the table.
func TestResyncHealsMissedNote(t *testing.T) {
	f := newFixture(t, Config{Resync: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	d := f.deploy("quiet", "w1")
	f.r.table.Store(&table{routes: map[string]*route{}, keys: map[[32]byte]apiKey{}}) // as if every note was lost
	testsupport.Eventually(t, 30*time.Second, "the periodic resync brings quiet back", func() bool { got, ok := f.r.Lookup("quiet"); return ok && got == d })
}

// TestCollect: a burst of notes is read as the components it names, or
// as everything when one is a resync or they name too many.
func TestCollect(t *testing.T) {
	for _, tc := range []struct {
		first  store.Note
		queued []store.Note
		want   []string
	}{
		{store.RoutesChangedFor("a"), nil, []string{"a"}},
		{store.RoutesChangedFor("a"), []store.Note{store.RoutesChangedFor("b"), store.RoutesChangedFor("a")}, []string{"a", "b"}},
		{store.RoutesChanged(), []store.Note{store.RoutesChangedFor("b")}, nil},
		{store.RoutesChangedFor("a"), []store.Note{store.RoutesChanged(), store.RoutesChangedFor("b")}, nil},
	} {
		c := make(chan store.Note, 100)
		for _, n := range tc.queued {
			c <- n
		}
		if got, _ := collect(tc.first, c); !slices.Equal(got, tc.want) {
			t.Errorf("collect(%s, %v) = %v, want %v", tc.first, tc.queued, got, tc.want)
		}
		if len(c) != 0 {
			t.Errorf("collect left %d notes queued", len(c))
		}
	}
	c := make(chan store.Note, 100)
	for i := range maxIncremental + 1 {
		c <- store.RoutesChangedFor(fmt.Sprint(i))
	}
	if got, _ := collect(store.RoutesChangedFor("x"), c); got != nil {
		t.Errorf("collect of %d names = %v, want nil (read everything)", maxIncremental+2, got)
	}
	c = make(chan store.Note, 1)
	c <- store.RoutesChangedFor("b")
	close(c)
	if got, _ := collect(store.RoutesChangedFor("a"), c); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("collect up to a closed channel = %v", got)
	}
}
