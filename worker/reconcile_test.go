package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// countingStore is a real store that counts the full reads of a worker's
// placements.
type countingStore struct {
	*store.Store
	full atomic.Int64
}

func (s *countingStore) WorkerPlacements(ctx context.Context, worker string) ([]store.Placement, error) {
	s.full.Add(1)
	return s.Store.WorkerPlacements(ctx, worker)
}

// nopRuntime prepares anything at once; its instances answer 204.
type nopRuntime struct{}

func (nopRuntime) Name() string { return "wasm" }
func (nopRuntime) Prepare(context.Context, Spec) (Instance, error) {
	return nopInstance{}, nil
}
func (nopRuntime) Close(context.Context) error { return nil }

type nopInstance struct{}

func (nopInstance) Serve(w http.ResponseWriter, _ *http.Request, _ string) {
	w.WriteHeader(http.StatusNoContent)
}
func (nopInstance) Close(context.Context) error { return nil }

// TestPlacementNotesReadOneDeployment: a placement note naming a
// deployment makes the worker read that deployment's placements alone, not
// all of its own (what a deploy costs must not grow with the deployments a
// worker holds), and what it serves still follows the store through
// random placements and retirements; a note naming none (a resync) reads
// everything, and catches up with changes no note named.
func TestPlacementNotesReadOneDeployment(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	st := &countingStore{Store: raw}

	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "m.wasm"), []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	var art bytes.Buffer
	if err := archive.Pack(&art, src); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(art.Bytes())
	digest := hex.EncodeToString(sum[:])
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(raw.PutArtifact(ctx, digest, art.Bytes()))
	must(raw.UpsertWorker(ctx, store.Worker{Name: "w1", Addr: "http://w1", StartedAt: time.Now(), SeenAt: time.Now()}))
	must(raw.CreateComponent(ctx, store.Component{Name: "c", Runtime: "wasm"}))
	placed := map[int64]bool{}
	place := func() int64 {
		t.Helper()
		d, err := raw.CreateDeployment(ctx, store.Deployment{Component: "c", Digest: digest, Runtime: "wasm",
			Manifest: []byte(`{"name":"c","runtime":"wasm","module":"m.wasm"}`), Status: store.StatusPreparing})
		must(err)
		must(raw.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w1"}))
		placed[d.ID] = true
		return d.ID
	}
	for range 20 {
		place()
	}

	w, err := New(Config{Name: "w1", DataDir: t.TempDir(), Resync: time.Hour, Heartbeat: time.Hour,
		Logger: slog.New(slog.DiscardHandler)}, st, nopRuntime{})
	must(err)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	follows := func(what string) {
		t.Helper()
		testsupport.EventuallyShow(t, 30*time.Second, what, func() bool {
			serving := *w.serving.Load()
			if len(serving) != len(placed) {
				return false
			}
			for d := range placed {
				if _, ok := serving[d]; !ok {
					return false
				}
			}
			return true
		}, func() string {
			var s, p []int64
			for d := range *w.serving.Load() {
				s = append(s, d)
			}
			for d := range placed {
				p = append(p, d)
			}
			slices.Sort(s)
			slices.Sort(p)
			return fmt.Sprintf("serving %v, placed %v", s, p)
		})
	}
	follows("the placements at start served")
	atStart := st.full.Load()

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		var d int64
		if rng.IntN(3) == 0 && len(placed) > 0 {
			ids := make([]int64, 0, len(placed))
			for id := range placed {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			d = ids[rng.IntN(len(ids))]
			must(raw.DeletePlacement(ctx, d, "w1"))
			delete(placed, d)
		} else {
			d = place()
		}
		must(raw.Notify(ctx, store.PlacementsChanged(d)))
		follows(fmt.Sprintf("step %d: deployment %d", i, d))
	}
	if n := st.full.Load() - atStart; n != 0 {
		t.Errorf("%d full reads of the worker's placements for notes each naming a deployment, want 0", n)
	}

	// Changes no note names, then a resync note: one full read.
	for d := range placed {
		must(raw.DeletePlacement(ctx, d, "w1"))
		delete(placed, d)
		break
	}
	place()
	must(raw.Notify(ctx, store.PlacementsChanged(0)))
	follows("after a resync note")
	if n := st.full.Load() - atStart; n < 1 {
		t.Errorf("a resync note did not read the worker's placements")
	}
}
