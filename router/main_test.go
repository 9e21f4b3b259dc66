package router

import (
	"testing"

	"github.com/velo-run/velo/internal/pgtest"
)

// TestMain stops the Postgres server a test may have started.
func TestMain(m *testing.M) { pgtest.Main(m) }
