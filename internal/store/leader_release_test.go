package store

import (
	"context"
	"testing"

	"github.com/velo-run/velo/internal/pgtest"
)

// TestLeaderReleaseFreesAtOnce: once Release returns, another session
// takes the lock at the first try, round after round. (Closing the
// session alone left the server ending it, lock held, a moment after
// Release returned: the next TryLeader could lose.)
func TestLeaderReleaseFreesAtOnce(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	stores := []*Store{openStore(t, url), openStore(t, url)}
	for i := range 40 {
		l, ok, err := stores[i%2].TryLeader(ctx, 77)
		if err != nil || !ok {
			t.Fatalf("round %d: TryLeader right after the other's Release: ok=%v err=%v", i, ok, err)
		}
		l.Release()
	}
}
