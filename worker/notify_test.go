package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// downStore is a Store whose notifications fail; it records placements
// and log lines, and has nothing else (a call to another method panics).
type downStore struct {
	Store
	notes []store.Note
}

func (s *downStore) PutPlacement(context.Context, store.Placement) error { return nil }
func (s *downStore) AppendLogs(context.Context, []store.LogLine) error   { return nil }
func (s *downStore) Notify(_ context.Context, n store.Note) error {
	s.notes = append(s.notes, n)
	return errors.New("database gone")
}

// TestFailedNotifyIsLogged: a worker that cannot notify (its report of a
// prepared placement, its logs) says so in its log instead of dropping the
// error.
func TestFailedNotifyIsLogged(t *testing.T) {
	var out testsupport.SyncBuffer
	st := &downStore{}
	w, err := New(Config{Name: "w1", DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&out, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	w.report(context.Background(), 7, "web", nil)
	w.logs.add(store.LogLine{Component: "web", Time: time.Now(), Stream: Stdout, Line: "hi"})
	w.logs.flush(context.Background())

	want := []store.Note{store.PlacementsChanged(7), store.RoutesChangedFor("web"), store.LogsWritten("web")}
	if len(st.notes) != len(want) {
		t.Fatalf("notes sent %v, want %v", st.notes, want)
	}
	for i := range want {
		if st.notes[i] != want[i] {
			t.Errorf("note %d = %s, want %s", i, st.notes[i], want[i])
		}
	}
	if n := strings.Count(out.String(), "notify failed"); n != 3 || !strings.Contains(out.String(), "database gone") {
		t.Errorf("%d failures logged, want 3 naming the cause:\n%s", n, out.String())
	}
}

// listenEndsStore is a Store whose notification channels close at once (a
// store closing under the worker) and that counts reads of placements.
type listenEndsStore struct {
	downStore
	reads atomic.Int64
}

func (s *listenEndsStore) UpsertWorker(context.Context, store.Worker) error   { return nil }
func (s *listenEndsStore) ResetPlacements(context.Context, string) error      { return nil }
func (s *listenEndsStore) Heartbeat(context.Context, string, time.Time) error { return nil }
func (s *listenEndsStore) Notify(context.Context, store.Note) error           { return nil }
func (s *listenEndsStore) WorkerPlacements(context.Context, string) ([]store.Placement, error) {
	s.reads.Add(1)
	return nil, nil
}
func (s *listenEndsStore) Listen(context.Context, store.Channel) (<-chan store.Note, error) {
	ch := make(chan store.Note)
	close(ch)
	return ch, nil
}

// TestRunSurvivesClosedNotifications: when the store's notification
// channels close before the worker is stopped, Run waits for its context
// instead of re-reading its placements in a busy loop.
func TestRunSurvivesClosedNotifications(t *testing.T) {
	st := &listenEndsStore{}
	w, err := New(Config{Name: "w1", DataDir: t.TempDir(), Resync: time.Hour, Heartbeat: time.Hour,
		Logger: slog.New(slog.DiscardHandler)}, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// One read at start; a spinning loop makes thousands.
	if n := st.reads.Load(); n > 2 {
		t.Errorf("placements read %d times in 300ms with the notifications closed", n)
	}
}
