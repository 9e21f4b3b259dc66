package docker

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
)

// buildTail is how many lines of build output a failed build's error carries.
const buildTail = 20

// imageTag names the image a runtime of owner builds for a component at an
// artifact digest: velo/<component>:<digest>-<owner>. The owner is in the
// tag because workers sharing one engine each build, label and remove
// their own image; with one tag, the second build took it over and the
// first worker's image could neither be found nor removed.
func imageTag(owner, component, digest string) string {
	d := digest
	if len(d) > 12 {
		d = d[:12]
	}
	o := repoName(owner)
	if len(o) > 100 {
		o = o[:100] // a tag holds at most 128 characters
	}
	return "velo/" + repoName(component) + ":" + strings.ToLower(d) + "-" + o
}

// repoName maps a component name onto what Docker accepts as a repository
// path component: lowercase letters, digits and single separators.
func repoName(s string) string {
	var b strings.Builder
	sep := true // no leading separator
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			b.WriteRune(c)
			sep = false
		case !sep:
			b.WriteByte('-')
			sep = true
		}
	}
	out := strings.TrimRight(b.String(), "-")
	if out == "" {
		return "component"
	}
	return out
}

// ensureImage builds the image for spec unless one with the same tag and
// digest label exists already.
func (r *Runtime) ensureImage(ctx context.Context, component, digest, dir string, log io.Writer) (string, error) {
	tag := imageTag(r.cfg.Owner, component, digest)
	lock := r.buildLock(tag)
	lock.Lock()
	defer lock.Unlock()

	img, err := r.cli.ImageInspect(ctx, tag)
	switch {
	case err == nil && img.Config != nil && img.Config.Labels[LabelDigest] == digest:
		fmt.Fprintf(log, "image %s already built for this digest; not rebuilding\n", tag)
		return tag, nil
	case err != nil && !cerrdefs.IsNotFound(err):
		return "", fmt.Errorf("inspect image %s: %w", tag, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "Dockerfile")); err != nil {
		return "", errors.New("no Dockerfile at the root of the component")
	}

	fmt.Fprintf(log, "building image %s\n", tag)
	// The labels go into the Dockerfile as one LABEL line: the legacy
	// builder turns ImageBuildOptions.Labels into one step per label, each
	// costing a container commit. No run.velo.managed label: containers
	// inherit an image's labels, and only the ones Velo creates are managed.
	label := fmt.Sprintf("\nLABEL %s=%q %s=%q %s=%q\n", LabelComponent, component, LabelDigest, digest, LabelOwner, r.cfg.Owner)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDir(pw, dir, label)) }()
	defer pr.Close()
	resp, err := r.cli.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	defer resp.Body.Close()
	if err := copyBuildOutput(log, resp.Body); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "built image %s\n", tag)
	return tag, nil
}

// buildMessage is one message of the engine's JSON build stream.
type buildMessage struct {
	Stream      string `json:"stream"`
	Status      string `json:"status"`
	Progress    string `json:"progress"`
	ID          string `json:"id"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
	Aux json.RawMessage `json:"aux"`
}

// copyBuildOutput decodes the build stream into log as text. A build that
// failed returns an error made of the last lines of its output.
func copyBuildOutput(log io.Writer, body io.Reader) error {
	t := &tail{n: buildTail}
	out := io.MultiWriter(log, t)
	dec := json.NewDecoder(body)
	for {
		var m buildMessage
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read build output: %w", err)
		}
		switch {
		case m.Error != "" || m.ErrorDetail != nil:
			msg := m.Error
			if msg == "" {
				msg = m.ErrorDetail.Message
			}
			fmt.Fprintln(out, msg)
			return fmt.Errorf("build failed:\n%s", t.String())
		case m.Stream != "":
			io.WriteString(out, m.Stream)
		case m.Status != "":
			line := m.Status
			if m.ID != "" {
				line = m.ID + ": " + line
			}
			if m.Progress != "" {
				line += " " + m.Progress
			}
			fmt.Fprintln(out, line)
		case len(m.Aux) > 0:
			var aux struct{ ID string }
			if json.Unmarshal(m.Aux, &aux) == nil && aux.ID != "" {
				fmt.Fprintf(out, "image id %s\n", aux.ID)
			}
		}
	}
}

// tarDir writes dir as an uncompressed tar stream: the build context, with
// appendDockerfile added to the Dockerfile at its root. Symbolic links are
// kept as links, never followed; .git is left out.
func tarDir(w io.Writer, dir, appendDockerfile string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if rel == "Dockerfile" && info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b = append(b, appendDockerfile...)
			hdr.Size = int64(len(b))
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("pack build context: %w", err)
	}
	return tw.Close()
}
