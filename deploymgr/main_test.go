package deploymgr_test

import (
	"testing"

	"github.com/velo-run/velo/internal/pgtest"
)

// TestMain stops the Postgres server the Postgres tests may have started.
func TestMain(m *testing.M) { pgtest.Main(m) }
