package deploymgr

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// Sources of a deployment.
const (
	SourceUpload = "upload"
	SourceGitHub = "github"
)

// DeployRequest is one new version of a component.
type DeployRequest struct {
	// Name forces the component's name; when empty the manifest's name is
	// used, else DefaultName.
	Name        string
	DefaultName string
	// NameSuffix is appended to the name (a preview: "--pr-N").
	NameSuffix string
	// Archive is the .tar.gz of the component's tree; Tree, when set, is
	// that tree already read (Archive is then not used).
	Archive io.Reader
	Tree    *archive.Tree
	// Dir is the component's directory inside the tree, for a repository
	// whose root velo.toml lists several components ("": the root).
	Dir string
	// StripTop removes the single top directory every entry sits in
	// (GitHub tarballs' owner-repo-sha/).
	StripTop bool
	Source   string
	Repo     string // owner/name, for GitHub
	Commit   string
	Message  string
	Author   string
	// Canary, 1-99, makes the deployment a canary once ready: it takes
	// that percent of the calls and the live one the rest, until it is
	// promoted (Promote). 0: it goes live once ready.
	Canary int
}

// InputError is a problem with what the user sent; the API answers 400
// with its message (413 when it is too large). It wraps its cause, so
// errors.Is and errors.As see through it (archive.ErrTooLarge, a
// manifest's error).
type InputError struct {
	Err error
	// TooLarge says what was sent is over a size limit (an archive over
	// archive.Limits, a secret's value).
	TooLarge bool
}

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// inputErr formats an InputError like fmt.Errorf (%w wraps).
func inputErr(format string, args ...any) error {
	return &InputError{Err: fmt.Errorf(format, args...)}
}

// Deploy validates an archive and its manifest, stores the artifact and
// records a pending deployment that the scheduler will place. Nothing is
// stored when validation fails, and the live version is never touched
// here: it changes only when the new deployment is ready.
func (m *Manager) Deploy(ctx context.Context, req DeployRequest) (store.Deployment, error) {
	tree := req.Tree
	if tree == nil {
		var err error
		tree, err = archive.Read(req.Archive, m.cfg.Limits, req.StripTop)
		if err != nil {
			return store.Deployment{}, &InputError{Err: err, TooLarge: errors.Is(err, archive.ErrTooLarge)}
		}
	}
	if req.Dir != "" {
		sub, err := tree.Sub(req.Dir)
		if err != nil {
			return store.Deployment{}, &InputError{Err: fmt.Errorf("component directory %s: %w", req.Dir, err)}
		}
		tree = sub
	} else if dirs, ok, err := manifest.ComponentDirs(tree); err != nil {
		return store.Deployment{}, &InputError{Err: err}
	} else if ok {
		return store.Deployment{}, inputErr("%s lists %d components (%s): deploy each directory on its own (velo deploy does)",
			manifest.FileName, len(dirs), strings.Join(dirs, ", "))
	}
	defName := req.DefaultName
	if req.Name != "" {
		defName = req.Name
	}
	man, err := manifest.Load(tree, defName)
	if err != nil {
		return store.Deployment{}, &InputError{Err: err}
	}
	apiDoc, err := openAPIOf(ctx, tree, man)
	if err != nil {
		return store.Deployment{}, err
	}
	if req.Name != "" {
		if err := manifest.ValidName(req.Name); err != nil {
			return store.Deployment{}, inputErr("component name %q: %w", req.Name, err)
		}
		man.Name = req.Name
	}
	parent := "" // the component a preview previews
	if req.NameSuffix != "" {
		parent = man.Name
		n := man.Name + req.NameSuffix
		if err := manifest.ValidName(n); err != nil {
			return store.Deployment{}, inputErr("component name %q: %w; shorten name in %s", n, err, manifest.FileName)
		}
		man.Name = n
	}
	if err := m.secretsClash(ctx, man, parent); err != nil {
		return store.Deployment{}, err
	}
	if req.Canary < 0 || req.Canary > 99 {
		return store.Deployment{}, inputErr("canary %d: want 1 to 99 (percent of the calls)", req.Canary)
	}
	manJSON, err := json.Marshal(man)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("encode manifest: %w", err)
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		return store.Deployment{}, fmt.Errorf("pack artifact: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	digest := hex.EncodeToString(sum[:])

	created := false
	comp, err := m.store.Component(ctx, man.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		comp = store.Component{Name: man.Name, Runtime: man.Runtime, Repo: req.Repo}
		if err := m.store.CreateComponent(ctx, comp); err != nil && !errors.Is(err, store.ErrConflict) {
			return store.Deployment{}, fmt.Errorf("create component %s: %w", man.Name, err)
		} else if err == nil {
			created = true
		}
	case err != nil:
		return store.Deployment{}, fmt.Errorf("read component %s: %w", man.Name, err)
	case req.Canary > 0 && comp.Live == 0:
		return store.Deployment{}, &ConflictError{Msg: fmt.Sprintf("component %q has no live deployment for a canary to share calls with: deploy it without --canary first", man.Name)}
	case req.Repo != "" && comp.Repo != req.Repo:
		owner := comp.Repo
		if owner == "" {
			owner = "an upload"
		}
		return store.Deployment{}, &ConflictError{Msg: fmt.Sprintf("component name %q is already used by %s; set another name in %s", man.Name, owner, manifest.FileName)}
	}
	if err := m.claimDomains(ctx, comp, man); err != nil {
		m.dropNew(created, man.Name)
		return store.Deployment{}, err
	}
	if err := m.store.PutArtifact(ctx, digest, buf.Bytes()); err != nil {
		m.dropNew(created, man.Name)
		return store.Deployment{}, fmt.Errorf("store artifact: %w", err)
	}
	dep, err := m.store.CreateDeployment(ctx, store.Deployment{
		Component: man.Name,
		Digest:    digest,
		Runtime:   man.Runtime,
		Manifest:  manJSON,
		Source:    req.Source,
		Commit:    req.Commit,
		Message:   req.Message,
		Author:    req.Author,
		Status:    store.StatusPending,
	})
	if err != nil {
		m.dropNew(created, man.Name)
		return store.Deployment{}, fmt.Errorf("record deployment: %w", err)
	}
	if apiDoc != nil {
		if err := m.store.SetOpenAPI(ctx, dep.ID, apiDoc); err != nil {
			return store.Deployment{}, fmt.Errorf("store openapi document: %w", err)
		}
	}
	if req.Canary > 0 {
		// Not the target: the live deployment stays live, and the
		// router gives the canary its share once it is ready.
		if err := m.store.SetCanary(ctx, man.Name, dep.ID, req.Canary); err != nil {
			return store.Deployment{}, fmt.Errorf("canary deployment %d: %w", dep.ID, err)
		}
	} else {
		if err := m.store.SetTarget(ctx, man.Name, dep.ID); err != nil {
			return store.Deployment{}, fmt.Errorf("target deployment %d: %w", dep.ID, err)
		}
		// A new version replaces a canary too.
		if ro, err := m.store.Rollout(ctx, man.Name); err == nil && ro.Canary != 0 {
			if err := m.store.SetCanary(ctx, man.Name, 0, 0); err != nil {
				return store.Deployment{}, fmt.Errorf("end canary of %s: %w", man.Name, err)
			}
		}
	}
	summary := fmt.Sprintf("deployment %d of %s: %s component, artifact %.12s (%d files, %d bytes)\n",
		dep.ID, man.Name, man.Runtime, digest, len(tree.Files()), buf.Len())
	_ = m.store.AppendBuildLog(ctx, dep.ID, summary)
	m.log.Info("deployment accepted", "component", man.Name, "deployment", dep.ID, "runtime", man.Runtime, "source", req.Source)
	m.notify(ctx, store.DeploymentChanged(dep.ID))
	return dep, nil
}

// dropNew removes a component that Deploy created before failing, so that
// a failed first upload leaves nothing behind.
func (m *Manager) dropNew(created bool, name string) {
	if !created {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.store.DeleteComponent(ctx, name); err != nil {
		m.log.Warn("remove half-created component failed", "component", name, "err", err)
	}
}

// ConflictError is a request that clashes with what exists (409).
type ConflictError struct{ Msg string }

func (e *ConflictError) Error() string { return e.Msg }
