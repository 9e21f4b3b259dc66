package worker

import (
	"testing"

	"github.com/velo-run/velo/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
