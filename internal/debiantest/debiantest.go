// Package debiantest gives tests Docker images of a real Debian system,
// built here without any container registry: debootstrap fetches Debian
// bookworm's packages from the mirror apt uses on this machine into a
// temporary root filesystem, which is then `docker import`ed.
//
// An image is named for what it holds: its tag carries a hash of the
// package list (and of this recipe), so it is built once per machine, the
// first time a test asks for that list, and reused by every later test and
// test run. Tests must not remove it (it is the cache); the containers,
// networks and images they make from it are theirs to remove. Building
// takes about a minute and 250 MB; concurrent test processes asking for the
// same list wait for one build (a lock file in the temporary directory).
//
// The images have no network at run time beyond the Docker networks a test
// makes: whatever a container needs from Debian goes into the package list.
//
//	img := debiantest.Image(t, debiantest.Host("postgresql", "sudo")...)
//	// docker run -d --cgroupns=private --tmpfs /run --tmpfs /run/lock \
//	//   --cap-add SYS_ADMIN img /sbin/init   (see HostConfig)
//
// Without debootstrap or a Docker engine the test is skipped, or fails
// under CI=true (testsupport.Need); scripts/test.sh installs debootstrap.
package debiantest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/testsupport"
)

// Suite is the Debian release the images are built from.
const Suite = "bookworm"

// Repository is the image repository of every image built here; the tag
// says which package list it holds.
const Repository = "velo-test/debian"

// recipe changes whenever the way an image is built changes, so that an
// image built by an older recipe is not reused.
const recipe = "2"

// buildTimeout bounds one build: debootstrap of a large list on a loaded
// machine takes minutes, never this long.
const buildTimeout = 15 * time.Minute

// Host returns the packages of a Debian host that boots with systemd and
// answers SSH (Debian's openssh-server), followed by extra.
func Host(extra ...string) []string {
	return append([]string{"systemd", "systemd-sysv", "dbus", "openssh-server"}, extra...)
}

// downloadPrefix marks an entry of a package list that is downloaded
// into the image's apt cache, with the package lists to install it from,
// but not installed (Downloaded).
const downloadPrefix = "download:"

// Downloaded returns entries for a package list that put packages (and
// what they depend on) into the image's apt cache, with apt's lists of the
// image's own sources, without installing them: `apt-get install NAME` in
// a container then installs the real packages from Debian, as on a host
// whose mirror is reachable, although the container reaches no mirror.
func Downloaded(packages ...string) []string {
	out := make([]string, len(packages))
	for i, p := range packages {
		out[i] = downloadPrefix + p
	}
	return out
}

// split separates the packages to install from those to download only.
func split(list []string) (install, download []string) {
	for _, p := range list {
		if name, ok := strings.CutPrefix(p, downloadPrefix); ok {
			download = append(download, name)
		} else {
			install = append(install, p)
		}
	}
	return install, download
}

// HostConfig returns how a container of a Host image is run so that
// systemd boots in it as PID 1 with /sbin/init as its command: a private
// cgroup namespace, /run and /run/lock as tmpfs, and CAP_SYS_ADMIN
// (--privileged is not needed, and refused by some engines).
func HostConfig() *container.HostConfig {
	return &container.HostConfig{
		CgroupnsMode: container.CgroupnsModePrivate,
		Tmpfs:        map[string]string{"/run": "", "/run/lock": ""},
		CapAdd:       []string{"SYS_ADMIN"},
	}
}

// Tag returns the reference (repository:tag) of the image of packages; the
// order of the list and repeated names do not matter.
func Tag(packages []string) string {
	list := normalize(packages)
	sum := sha256.Sum256([]byte(recipe + "\n" + Suite + "\n" + strings.Join(list, "\n")))
	return Repository + ":" + Suite + "-" + hex.EncodeToString(sum[:])[:12]
}

func normalize(packages []string) []string {
	list := slices.Clone(packages)
	slices.Sort(list)
	return slices.Compact(list)
}

// Image returns the reference of an image of Debian with packages
// installed, building it if this machine has none yet. It skips t without
// debootstrap or a Docker engine, or fails it under CI=true.
func Image(t testing.TB, packages ...string) string {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
	}
	testsupport.Need(t, "Docker engine", err)
	ref := Tag(packages)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = cli.ImageInspect(ctx, ref)
	cancel()
	if err == nil {
		return ref
	}
	_, err = exec.LookPath("debootstrap")
	testsupport.Need(t, "debootstrap (apt-get install debootstrap)", err)
	ctx, cancel = context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	t.Logf("building %s (debootstrap %s with %s)", ref, Suite, strings.Join(normalize(packages), ","))
	if _, err := Build(ctx, cli, packages, io.Discard); err != nil {
		t.Fatal(err)
	}
	return ref
}

// building serializes the builds of one process; the lock file, those of
// several (go test runs packages in parallel).
var building sync.Mutex

// Build is Image for code that is not a test (the benchmarks): it returns
// the reference of the image of packages, building it with debootstrap
// (whose output goes to log) unless the engine has it already.
func Build(ctx context.Context, cli *client.Client, packages []string, log io.Writer) (string, error) {
	ref := Tag(packages)
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	} else if !errdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}

	building.Lock()
	defer building.Unlock()
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "velo-debiantest-"+strings.ReplaceAll(ref[len(Repository)+1:], ":", "-")+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("lock build of %s: %w", ref, err)
	}
	defer lock.Close()
	if err := flock(ctx, lock); err != nil {
		return "", fmt.Errorf("lock build of %s: %w", ref, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	// Another process may have built it while this one waited.
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	}

	removeStale()
	dir, err := os.MkdirTemp("", rootfsPrefix)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	args := []string{"--variant=minbase"}
	include, download := split(normalize(packages))
	if len(include) > 0 {
		args = append(args, "--include="+strings.Join(include, ","))
	}
	args = append(args, Suite, root)
	if mirror := aptMirror(); mirror != "" {
		args = append(args, mirror)
	}
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	var tail tailWriter
	if log == io.Discard {
		cmd.Stdout, cmd.Stderr = &tail, &tail
	} else {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(log, &tail), io.MultiWriter(log, &tail)
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("debootstrap %s: %w\n%s", strings.Join(args, " "), err, tail.String())
	}
	if len(download) > 0 {
		if err := downloadInto(ctx, root, download, log); err != nil {
			return "", err
		}
	}
	if err := trim(root, len(download) > 0); err != nil {
		return "", err
	}
	if err := importRoot(ctx, cli, root, ref); err != nil {
		return "", err
	}
	return ref, nil
}

// rootfsPrefix begins the name of the temporary directory of a build.
const rootfsPrefix = "velo-debiantest-rootfs-"

// removeStale removes what builds killed before they could clean up left
// behind: root filesystems older than any build lasts.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), rootfsPrefix+"*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > 2*buildTimeout {
			os.RemoveAll(d)
		}
	}
}

// flock takes an exclusive lock on f, giving up when ctx ends.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EWOULDBLOCK {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// trim removes from the root filesystem what only the build needed: the
// downloaded packages and the package lists (the containers reach no
// mirror), and the machine id, which each container's systemd makes anew.
// downloadInto runs apt-get inside root (chroot) to fetch its package
// lists and download packages into its cache, from the sources debootstrap
// wrote there.
func downloadInto(ctx context.Context, root string, packages []string, log io.Writer) error {
	// Names resolve as on this machine while apt runs; the image keeps
	// none of it (Docker gives a container its own resolv.conf).
	// Whatever debootstrap left there (a symlink would lead out of root)
	// goes first.
	if err := os.Remove(filepath.Join(root, "etc", "resolv.conf")); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("download %s: %w", strings.Join(packages, ","), err)
	}
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		if err := os.WriteFile(filepath.Join(root, "etc", "resolv.conf"), b, 0o644); err != nil {
			return fmt.Errorf("download %s: %w", strings.Join(packages, ","), err)
		}
	}
	for _, args := range [][]string{
		{"apt-get", "update", "-q"},
		append([]string{"apt-get", "install", "-y", "-q", "--download-only"}, packages...),
	} {
		cmd := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LANG=C"}
		var tail tailWriter
		if log == io.Discard {
			cmd.Stdout, cmd.Stderr = &tail, &tail
		} else {
			cmd.Stdout, cmd.Stderr = io.MultiWriter(log, &tail), io.MultiWriter(log, &tail)
		}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("chroot %s %s: %w\n%s", root, strings.Join(args, " "), err, tail.String())
		}
	}
	if err := os.Remove(filepath.Join(root, "etc", "resolv.conf")); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("download %s: %w", strings.Join(packages, ","), err)
	}
	return nil
}

// trim removes what an image does not need; keepApt keeps apt's package
// cache and lists (the image holds packages downloaded to install later).
func trim(root string, keepApt bool) error {
	patterns := []string{"var/log/*.log"}
	if !keepApt {
		patterns = append(patterns, "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages", "var/lib/apt/lists/*_InRelease")
	}
	for _, pattern := range patterns {
		matches, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				return fmt.Errorf("trim root filesystem: %w", err)
			}
		}
	}
	// An empty machine-id tells systemd to make one at boot.
	if err := os.WriteFile(filepath.Join(root, "etc", "machine-id"), nil, 0o444); err != nil {
		return fmt.Errorf("trim root filesystem: %w", err)
	}
	return nil
}

// importRoot imports the root filesystem at root as image ref
// (tar -C root -c . | docker import - ref).
func importRoot(ctx context.Context, cli *client.Client, root, ref string) error {
	tar := exec.CommandContext(ctx, "tar", "--numeric-owner", "-C", root, "-c", ".")
	out, err := tar.StdoutPipe()
	if err != nil {
		return err
	}
	var tail tailWriter
	tar.Stderr = &tail
	if err := tar.Start(); err != nil {
		return fmt.Errorf("tar root filesystem: %w", err)
	}
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: out, SourceName: "-"}, ref, image.ImportOptions{})
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	if werr := tar.Wait(); werr != nil && err == nil {
		err = fmt.Errorf("tar root filesystem: %w\n%s", werr, tail.String())
	}
	if err != nil {
		return fmt.Errorf("import image %s: %w", ref, err)
	}
	return nil
}

// aptMirror returns the Debian mirror apt is configured with on this
// machine (the first deb URI of its sources for the main archive), or ""
// for debootstrap's default.
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if uri, ok := strings.CutPrefix(strings.TrimSpace(line), "URIs:"); ok {
				for _, u := range strings.Fields(uri) {
					if strings.HasSuffix(strings.TrimSuffix(u, "/"), "/debian") {
						return u
					}
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "deb" {
				for _, u := range f[1:] {
					if strings.Contains(u, "://") && strings.HasSuffix(strings.TrimSuffix(u, "/"), "/debian") {
						return u
					}
				}
			}
		}
	}
	return ""
}

// tailWriter keeps the last few KiB written to it, for error messages.
type tailWriter struct {
	mu sync.Mutex
	b  []byte
}

const tailSize = 4 << 10

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > tailSize {
		w.b = append(w.b[:0], w.b[len(w.b)-tailSize:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

// Boot starts a container of the Host image img, named name, on network
// (a Docker network of the test's; "" for none), with systemd as PID 1,
// and waits until systemd has booted and sshd is active. The container is
// removed when t ends. It returns the container's id.
func Boot(t testing.TB, cli *client.Client, img, name, network string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := Start(ctx, cli, img, name, network)
	if id != "" {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := Remove(ctx, cli, id); err != nil {
				t.Errorf("remove container %s: %v", name, err)
			}
		})
	}
	if err == nil {
		err = WaitBooted(ctx, cli, id)
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Start is Boot for code that is not a test: it creates and starts the
// container and returns its id (also when starting it failed: the caller
// removes it with Remove), without waiting for the boot.
func Start(ctx context.Context, cli *client.Client, img, name, network string) (string, error) {
	hc := HostConfig()
	if network == "" {
		network = "none"
	}
	hc.NetworkMode = container.NetworkMode(network)
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"/sbin/init"}, Hostname: name}, hc, nil, nil, name)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return c.ID, fmt.Errorf("start container %s: %w", name, err)
	}
	return c.ID, nil
}

// Remove removes the container id, running or not, with its volumes.
func Remove(ctx context.Context, cli *client.Client, id string) error {
	err := cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// WaitBooted waits until systemd in container id has booted (running, or
// degraded: some unit a container cannot run failed) and sshd is active,
// for at most 90 s.
func WaitBooted(ctx context.Context, cli *client.Client, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		out, _, err := Exec(ctx, cli, id, "sh", "-c", "systemctl is-system-running; systemctl is-active ssh")
		f := strings.Fields(out)
		if len(f) == 2 && (f[0] == "running" || f[0] == "degraded") && f[1] == "active" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %.12s: systemd booted and sshd active: not after 90s (last seen %q, %v)", id, out, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Exec runs cmd in the container id as root and returns what it printed
// (standard output and error together) and its exit code.
func Exec(ctx context.Context, cli *client.Client, id string, cmd ...string) (string, int, error) {
	ex, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: true})
	if err != nil {
		return "", -1, fmt.Errorf("exec %s: %w", strings.Join(cmd, " "), err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{Tty: true})
	if err != nil {
		return "", -1, fmt.Errorf("exec %s: %w", strings.Join(cmd, " "), err)
	}
	defer att.Close()
	var out tailWriter
	done := make(chan error, 1)
	go func() { _, err := io.Copy(&out, att.Reader); done <- err }()
	select {
	case <-ctx.Done():
		return out.String(), -1, ctx.Err()
	case <-done:
	}
	in, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return out.String(), -1, fmt.Errorf("exec %s: %w", strings.Join(cmd, " "), err)
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n"), in.ExitCode, nil
}

// BaseImage and BasePackages are the Debian base image that
// docker-compose.yml and examples/hello-docker build on: Debian's
// PostgreSQL and CA certificates. `go run ./deploy/build` makes it (Build,
// then tagged BaseImage), outside tests.
const BaseImage = "velo-debian:bookworm"

// BasePackages are the packages of BaseImage.
var BasePackages = []string{"ca-certificates", "postgresql"}
