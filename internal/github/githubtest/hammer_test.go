package githubtest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
)

// TestAppHammer drives one App from many goroutines across installations:
// race-free, and one installation token per installation.
func TestAppHammer(t *testing.T) {
	s := githubtest.New(t)
	const installs = 3
	heads := map[int64]string{}
	for i := int64(1); i <= installs; i++ {
		r := s.AddRepo(fmt.Sprintf("owner%d", i), "app", "main", i)
		heads[i] = r.Commit(map[string]string{"f": fmt.Sprint(i)}, "c")
	}
	app, err := github.NewApp(s.Config(), s.Client())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := int64(g%installs) + 1
			for range 5 {
				_, head, err := app.DefaultBranchHead(context.Background(), id, fmt.Sprintf("owner%d", id), "app")
				if err != nil || head != heads[id] {
					t.Errorf("installation %d: %s %v", id, head, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := s.TokensIssued(); n != installs {
		t.Errorf("%d tokens issued, want %d", n, installs)
	}
}
