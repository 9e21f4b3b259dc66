package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/velo-run/velo/worker"
)

// Labels Velo puts on the images and containers it owns.
const (
	LabelManaged    = "run.velo.managed"
	LabelOwner      = "run.velo.owner"
	LabelComponent  = "run.velo.component"
	LabelDeployment = "run.velo.deployment"
	LabelDigest     = "run.velo.digest"
)

// Defaults applied to a zero Config field.
const (
	DefaultIdlePause       = 30 * time.Second
	DefaultIdleStop        = 10 * time.Minute
	DefaultReadyTimeout    = 30 * time.Second
	DefaultCPUs            = 1.0
	DefaultPids            = 256
	DefaultScaleUpInFlight = 8
	DefaultCrashBackoff    = time.Second
)

// crashWindow: a container that crashes within this time of its start
// continues a crash streak; crashBackoffMax caps the hold between starts.
const (
	crashWindow     = 30 * time.Second
	crashBackoffMax = time.Minute
)

// Config configures a Runtime. Zero fields take the defaults above.
type Config struct {
	// Owner is this worker's name. It labels everything the runtime
	// creates, and New removes the containers an earlier run with the same
	// owner left behind. Empty means the host name.
	Owner string
	// IdlePause is how long a container may go without a request before it
	// is paused; IdleStop how long before it is stopped. Both count from
	// the last request, so IdleStop should be the longer.
	IdlePause, IdleStop time.Duration
	// ReadyTimeout bounds how long a started container may take before its
	// port answers HTTP.
	ReadyTimeout time.Duration
	// CPUs and Pids limit each container.
	CPUs float64
	Pids int64
	// ScaleUpInFlight is the number of requests in flight on every running
	// container above which another container is started (up to scale.max).
	ScaleUpInFlight int
	// CrashBackoff is the first hold before a container that keeps
	// crashing soon after its start is started again; it doubles with
	// every further crash, up to a minute. The first crash is replaced at
	// once.
	CrashBackoff time.Duration
	Logger       *slog.Logger
	// Client talks to the engine; nil means one built from the environment
	// (DOCKER_HOST and friends), which Close then closes.
	Client *client.Client
}

func (c Config) withDefaults() (Config, error) {
	if c.Owner == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("owner: %w", err)
		}
		c.Owner = h
	}
	if c.IdlePause <= 0 {
		c.IdlePause = DefaultIdlePause
	}
	if c.IdleStop <= 0 {
		c.IdleStop = DefaultIdleStop
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.CPUs <= 0 {
		c.CPUs = DefaultCPUs
	}
	if c.Pids <= 0 {
		c.Pids = DefaultPids
	}
	if c.ScaleUpInFlight <= 0 {
		c.ScaleUpInFlight = DefaultScaleUpInFlight
	}
	if c.CrashBackoff <= 0 {
		c.CrashBackoff = DefaultCrashBackoff
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Runtime builds and runs Docker components. It is safe for concurrent use.
type Runtime struct {
	cfg       Config
	cli       *client.Client
	ownClient bool
	log       *slog.Logger

	mu       sync.Mutex
	inUse    map[string]int         // image tag → open instances using it
	building map[string]*sync.Mutex // image tag → held while it is checked or built
	shells   int                    // open, at most MaxShells
}

var _ worker.Runtime = (*Runtime)(nil)

// New connects to the Docker engine, checks that it answers, and removes the
// containers that an earlier run of the same owner left behind.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Runtime{
		cfg:      cfg,
		cli:      cfg.Client,
		log:      cfg.Logger.With("runtime", "docker", "owner", cfg.Owner),
		inUse:    map[string]int{},
		building: map[string]*sync.Mutex{},
	}
	if r.cli == nil {
		r.cli, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		r.ownClient = true
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := r.cli.Ping(pctx); err != nil {
		r.closeClient()
		return nil, fmt.Errorf("docker engine not reachable: %w", err)
	}
	r.cli.NegotiateAPIVersion(ctx)
	if err := r.adopt(ctx); err != nil {
		r.closeClient()
		return nil, err
	}
	return r, nil
}

// Name returns "docker".
func (r *Runtime) Name() string { return "docker" }

// Client returns the engine client the runtime uses.
func (r *Runtime) Client() *client.Client { return r.cli }

// Owner returns the owner label the runtime puts on what it creates.
func (r *Runtime) Owner() string { return r.cfg.Owner }

// Close releases the client. Instances must be closed first; images are
// kept so that a restart does not rebuild them.
func (r *Runtime) Close(ctx context.Context) error {
	return r.closeClient()
}

// newTransport returns the transport of one run of a container: its proxy
// and ready checks share it, so keep-alive connections to the container
// survive between requests, and stopping the container closes its idle
// connections (dead with its published port) and no one else's.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // containers are on loopback; never via an HTTP proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

func (r *Runtime) closeClient() error {
	if !r.ownClient {
		return nil
	}
	if err := r.cli.Close(); err != nil {
		return fmt.Errorf("close docker client: %w", err)
	}
	return nil
}

// adopt removes the containers an earlier run of this owner left behind:
// their deployments will be prepared again, and a stale container would only
// hold memory and a name. Containers of other owners are never touched.
func (r *Runtime) adopt(ctx context.Context) error {
	list, err := r.cli.ContainerList(ctx, container.ListOptions{
		All: true,
		Filters: filters.NewArgs(
			filters.Arg("label", LabelManaged+"=true"),
			filters.Arg("label", LabelOwner+"="+r.cfg.Owner),
		),
	})
	if err != nil {
		return fmt.Errorf("list leftover containers: %w", err)
	}
	var errs []error
	for _, c := range list {
		// The engine filtered on the labels already; check again because
		// removing a container that is not ours would be unforgivable.
		if c.Labels[LabelManaged] != "true" || c.Labels[LabelOwner] != r.cfg.Owner {
			continue
		}
		if err := r.remove(ctx, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("leftover: %w", err))
			continue
		}
		r.log.Info("removed leftover container", "container", c.ID[:12], "names", c.Names)
	}
	return errors.Join(errs...)
}

// removeTimeout bounds removing one container.
const removeTimeout = 30 * time.Second

// remove force-removes container id. A container already gone, or whose
// removal the engine is already carrying out, counts as removed.
func (r *Runtime) remove(ctx context.Context, id string) error {
	err := r.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress"):
		return nil
	}
	return fmt.Errorf("remove container %s: %w", id[:min(12, len(id))], err)
}

// ErrImageInUse is returned by RemoveImage while an open instance uses the image.
var ErrImageInUse = errors.New("image in use")

// RemoveImage removes the image built for component at digest, once the
// instances that ran it are closed (for example when a newer deployment took
// over). It returns ErrImageInUse while an open instance of this runtime still
// uses it, and nil when the image is already gone. An image that is not ours
// (other owner label) or that the engine still sees in use is left alone.
func (r *Runtime) RemoveImage(ctx context.Context, component, digest string) error {
	tag := imageTag(r.cfg.Owner, component, digest)
	r.mu.Lock()
	n := r.inUse[tag]
	r.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("remove image %s: %w", tag, ErrImageInUse)
	}
	img, err := r.cli.ImageInspect(ctx, tag)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect image %s: %w", tag, err)
	}
	if img.Config == nil || img.Config.Labels[LabelOwner] != r.cfg.Owner || img.Config.Labels[LabelDigest] != digest {
		return nil
	}
	_, err = r.cli.ImageRemove(ctx, tag, image.RemoveOptions{PruneChildren: true})
	switch {
	case cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err):
		return fmt.Errorf("remove image %s: %w: %v", tag, ErrImageInUse, err)
	case err != nil:
		return fmt.Errorf("remove image %s: %w", tag, err)
	}
	r.log.Info("removed image", "image", tag)
	return nil
}

func (r *Runtime) acquireImage(tag string) {
	r.mu.Lock()
	r.inUse[tag]++
	r.mu.Unlock()
}

func (r *Runtime) releaseImage(tag string) {
	r.mu.Lock()
	if r.inUse[tag]--; r.inUse[tag] <= 0 {
		delete(r.inUse, tag)
	}
	r.mu.Unlock()
}

// buildLock returns the lock that serialises building one tag, so that two
// deployments of the same digest prepared at once build it once.
func (r *Runtime) buildLock(tag string) *sync.Mutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.building[tag]
	if m == nil {
		m = &sync.Mutex{}
		r.building[tag] = m
	}
	return m
}

// Retire removes the image of a replaced deployment, unless an instance
// still uses it.
func (r *Runtime) Retire(ctx context.Context, component, digest string) error {
	if err := r.RemoveImage(ctx, component, digest); err != nil && !errors.Is(err, ErrImageInUse) {
		return err
	}
	return nil
}

var _ worker.Retirer = (*Runtime)(nil)
