package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
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
	w.report(context.Background(), 7, nil)
	w.logs.add(store.LogLine{Component: "web", Time: time.Now(), Stream: Stdout, Line: "hi"})
	w.logs.flush(context.Background())

	want := []store.Note{store.PlacementsChanged(7), store.RoutesChanged(), store.LogsWritten("web")}
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
