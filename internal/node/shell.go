package node

import (
	"context"
	"io"
	"net"

	"github.com/velo-run/velo/internal/shell"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/worker"
)

// localShells opens shells on the worker of this process (velo up): the
// session runs over an in-memory pipe instead of an HTTP hop.
type localShells struct{ wk *worker.Worker }

func (l localShells) DialShell(ctx context.Context, _ store.Worker, d int64, req shell.Request, who string) (io.ReadWriteCloser, error) {
	p, err := l.wk.Shell(ctx, d, req, who)
	if err != nil {
		return nil, err
	}
	here, there := net.Pipe()
	// The session ends with the command, the client, or the instance (a
	// new version, shutdown), which cuts its shells off.
	go shell.Serve(context.WithoutCancel(ctx), there, p)
	return here, nil
}
