package events

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
)

// TestCallArgsStored: a queued call is one string in River's args (beside
// a schedule tick's schedule and tick), so River's GIN index on args holds
// one entry for it, not one per header and setting; the job reads back as
// the call that was queued.
func TestCallArgsStored(t *testing.T) {
	ctx := context.Background()
	st, _ := openMigrated(t, pgtest.URL(t))
	if err := st.CreateComponent(ctx, store.Component{Name: "args", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	call := &router.Call{Component: "args", Method: "POST", Host: "h", URI: "/fn/args/x?y=1",
		Header: http.Header{"User-Agent": {"t"}, "X-A": {"1", "2"}}, Body: []byte("body"), RemoteAddr: "127.0.0.1:1",
		Source: router.SourceAsync, Timeout: 3 * time.Second, Events: manifest.Events{MaxAttempts: 3, Concurrency: 2, MaxQueued: 10}}
	id, _, err := e.Enqueue(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	rs, err := st.PostgresPool().Query(ctx, `SELECT jsonb_object_keys(args) FROM river_job WHERE id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var k string
		if err := rs.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	rs.Close()
	if !slices.Equal(keys, []string{"call"}) {
		t.Errorf("River's args of a queued call have the keys %q, want only \"call\"", keys)
	}
	j, err := e.client.JobGet(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var got callArgs
	if err := json.Unmarshal(j.EncodedArgs, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Call, *call) {
		t.Errorf("the job reads back as %+v, want %+v", got.Call, *call)
	}
}

// TestCallArgsDecode: callArgs round-trips with a schedule's tick, and a
// job queued by an older Velo (the call's fields at the top level of the
// args) still decodes.
func TestCallArgsDecode(t *testing.T) {
	a := callArgs{Call: router.Call{Component: "c", Method: "GET", URI: "/fn/c/", Header: http.Header{"A": {"b"}},
		Source: router.SourceSchedule, Timeout: time.Second, Events: manifest.Events{Concurrency: 3}},
		Schedule: "0", Tick: 1234}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back callArgs
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, a) {
		t.Errorf("round trip of %s: %+v %v, want %+v", b, back, err, a)
	}
	type flat callArgs // the encoding before callArgsJSON
	old, err := json.Marshal(flat(a))
	if err != nil {
		t.Fatal(err)
	}
	var fromOld callArgs
	if err := json.Unmarshal(old, &fromOld); err != nil || !reflect.DeepEqual(fromOld, a) {
		t.Errorf("old args %s decode as %+v %v, want %+v", old, fromOld, err, a)
	}
}
