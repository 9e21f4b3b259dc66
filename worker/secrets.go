package worker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
)

// secretSet is a component's secrets, opened, with what the worker derives
// from them.
type secretSet struct {
	values map[string]string
	// sum fingerprints names and values: equal sums, equal secrets. Zero
	// when there are none.
	sum    [32]byte
	redact *secrets.Redactor
}

// secretsOf reads the secrets component receives: its own and, for a
// preview (NAME--pr-N, made from the same repository as NAME), those of
// NAME marked for previews; its own win over NAME's of the same name.
// Ordered by name. A preview never sees NAME's unmarked secrets, nor any
// of NAME's when the two do not come from the same repository (an upload
// named like a preview).
func (w *Worker) secretsOf(ctx context.Context, component string) ([]store.Secret, error) {
	list, err := w.store.Secrets(ctx, component)
	if err != nil {
		return nil, fmt.Errorf("read secrets of %s: %w", component, err)
	}
	parent, _, ok := manifest.PreviewOf(component)
	if !ok {
		return list, nil
	}
	pc, err := w.store.Component(ctx, parent)
	if errors.Is(err, store.ErrNotFound) {
		return list, nil
	} else if err != nil {
		return nil, fmt.Errorf("read component %s of preview %s: %w", parent, component, err)
	}
	c, err := w.store.Component(ctx, component)
	if errors.Is(err, store.ErrNotFound) {
		return list, nil
	} else if err != nil {
		return nil, fmt.Errorf("read component %s: %w", component, err)
	}
	if c.Repo == "" || !strings.EqualFold(c.Repo, pc.Repo) {
		return list, nil
	}
	inherited, err := w.store.Secrets(ctx, parent)
	if err != nil {
		return nil, fmt.Errorf("read secrets of %s for its preview %s: %w", parent, component, err)
	}
	for _, s := range inherited {
		if s.Preview && !slices.ContainsFunc(list, func(o store.Secret) bool { return o.Name == s.Name }) {
			list = append(list, s)
		}
	}
	slices.SortFunc(list, func(a, b store.Secret) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

// openSecrets reads and opens the secrets of component (secretsOf). A
// component with secrets cannot start on a worker without the key that
// sealed them.
func (w *Worker) openSecrets(ctx context.Context, component string) (secretSet, error) {
	list, err := w.secretsOf(ctx, component)
	if err != nil {
		return secretSet{}, err
	}
	if len(list) == 0 {
		return secretSet{}, nil
	}
	if w.cfg.Secrets == nil {
		names := make([]string, len(list))
		for i, s := range list {
			names[i] = s.Name
		}
		return secretSet{}, fmt.Errorf("component %s has secrets (%s) but worker %s has no secrets key: start it with %s set, the same keys as deploymgr's",
			component, strings.Join(names, ", "), w.cfg.Name, secrets.EnvKey)
	}
	set := secretSet{values: make(map[string]string, len(list))}
	h := sha256.New()
	for _, s := range list { // ordered by name
		v, err := w.cfg.Secrets.Open(s.Component, s.Name, s.KeyID, s.Sealed)
		if err != nil {
			return secretSet{}, fmt.Errorf("worker %s: %w", w.cfg.Name, err)
		}
		set.values[s.Name] = v
		fmt.Fprintf(h, "%d:%s%d:%s", len(s.Name), s.Name, len(v), v)
	}
	h.Sum(set.sum[:0])
	set.redact = secrets.NewRedactor(set.values)
	return set, nil
}

// reloadGrace is how long an instance replaced for changed secrets keeps
// taking requests after the switch, for those already on their way to it.
const reloadGrace = 2 * time.Second

// reloadState is a component whose instances are being restarted with
// changed secrets; again says another change came in meanwhile.
type reloadState struct{ again bool }

// secretsChanged restarts the instances of component whose secrets are no
// longer what they run with, and those of its previews (NAME--pr-N, which
// may receive some of them). Changes to one component are applied one at
// a time, the last one last; different components restart in parallel.
func (w *Worker) secretsChanged(ctx context.Context, component string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.secretEvents++
	w.reloadLocked(ctx, component)
	var previews []string
	for _, spec := range w.loaded {
		if parent, _, ok := manifest.PreviewOf(spec.component); ok && parent == component && !slices.Contains(previews, spec.component) {
			previews = append(previews, spec.component)
		}
	}
	for _, p := range previews {
		w.reloadLocked(ctx, p)
	}
}

// reloadLocked starts (or asks again for) the reload of component; w.mu
// is held.
func (w *Worker) reloadLocked(ctx context.Context, component string) {
	if st := w.reloading[component]; st != nil {
		st.again = true
		return
	}
	w.reloading[component] = &reloadState{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			w.reload(ctx, component)
			w.mu.Lock()
			st := w.reloading[component]
			if !st.again || ctx.Err() != nil {
				delete(w.reloading, component)
				w.mu.Unlock()
				return
			}
			st.again = false
			w.mu.Unlock()
		}
	}()
}

// allSecretsChanged checks every served component, after notifications
// may have been missed.
func (w *Worker) allSecretsChanged(ctx context.Context) {
	w.mu.Lock()
	var comps []string
	for _, spec := range w.loaded {
		if !slices.Contains(comps, spec.component) {
			comps = append(comps, spec.component)
		}
	}
	w.mu.Unlock()
	for _, c := range comps {
		w.secretsChanged(ctx, c)
	}
}

// reload prepares each served deployment of component again with its
// current secrets, switches requests to the new instance once it is ready
// and closes the old one, letting its requests in flight finish. A WASM
// instance is ready at once (the module stays compiled), so the next
// request sees the change; a Docker one once its new containers answer.
// Should the new instance fail, the old one keeps serving.
func (w *Worker) reload(ctx context.Context, component string) {
	w.mu.Lock()
	var ds []int64
	for d, spec := range w.loaded {
		if spec.component == component {
			ds = append(ds, d)
		}
	}
	w.mu.Unlock()
	if len(ds) == 0 {
		return
	}
	set, err := w.openSecrets(ctx, component)
	if err != nil {
		if ctx.Err() == nil {
			for _, d := range ds {
				w.logs.add(store.LogLine{Component: component, Deployment: d, Time: time.Now(), Stream: System,
					Line: fmt.Sprintf("secrets changed but could not be read: %v; running with the previous ones", err)})
			}
		}
		return
	}
	for _, d := range ds {
		w.mu.Lock()
		old := (*w.serving.Load())[d]
		same := w.sums[d] == set.sum
		restart := w.restarts[d] + 1
		w.mu.Unlock()
		if old == nil || same || ctx.Err() != nil {
			continue
		}
		event := func(format string, args ...any) {
			w.logs.add(store.LogLine{Component: component, Deployment: d, Time: time.Now(), Stream: System,
				Line: fmt.Sprintf(format, args...)})
		}
		inst, spec, err := w.load(ctx, d, restart, &set)
		if err != nil {
			if ctx.Err() == nil {
				event("secrets changed, but deployment %d did not start with them: %v; it keeps serving with the previous ones", d, err)
			}
			continue
		}
		w.mu.Lock()
		serving := *w.serving.Load()
		if serving[d] != old || ctx.Err() != nil {
			// Replaced or retired meanwhile: the new instance is not needed.
			w.mu.Unlock()
			w.wg.Add(1)
			go func() { defer w.wg.Done(); w.close(inst, spec, false) }()
			continue
		}
		next := make(map[int64]Instance, len(serving))
		for k, v := range serving {
			next[k] = v
		}
		next[d] = inst
		w.serving.Store(&next)
		w.loaded[d] = spec
		w.sums[d], w.restarts[d] = set.sum, restart
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			// A request that read the old instance from the map just
			// before the switch has yet to enter it: closing at once
			// would turn it away. Give such stragglers a moment.
			t := time.NewTimer(reloadGrace)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			w.close(old, spec, false)
		}()
		w.mu.Unlock()
		event("secrets changed: deployment %d runs with them now (%d set)", d, len(set.values))
	}
}

// redactWriter redacts secret values from what passes to w.
type redactWriter struct {
	w io.Writer
	r *secrets.Redactor
}

func (rw redactWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(rw.w, rw.r.Line(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
