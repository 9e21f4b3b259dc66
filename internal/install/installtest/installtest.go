// Package installtest gives the tests and the benchmark of velo install
// real hosts to install on: containers of a Debian image (debiantest)
// running systemd and Debian's sshd on a private Docker network of their
// own, each with an unprivileged user "admin" allowed passwordless sudo and
// logging in with an ed25519 key made for the run, and an empty
// known_hosts file.
//
// It is used by tests and bench/ only, never by code that ships.
package installtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"golang.org/x/crypto/ssh"

	"github.com/velo-run/velo/internal/debiantest"
)

// Packages is what the hosts' image holds besides systemd and sshd: sudo
// for the admin user, and Debian's PostgreSQL downloaded into apt's cache
// but not installed, so that --with-postgres installs it with apt as on a
// host that reaches its mirror (the containers reach none).
func Packages() []string {
	return append(debiantest.Host("sudo"), debiantest.Downloaded("postgresql")...)
}

// User is the account the hosts are reached as.
const User = "admin"

// Host is one container.
type Host struct {
	Name string
	ID   string
	IP   string
}

// Target is the host's ssh:// URL.
func (h Host) Target() string { return "ssh://" + User + "@" + h.IP }

// Hosts is a set of hosts on their network.
type Hosts struct {
	cli      *client.Client
	Network  string
	Hosts    []Host
	Dir      string // temporary directory: the key and known_hosts
	Identity string // private key file
	// KnownHosts is the known_hosts file, empty at first.
	KnownHosts string
}

// New starts n hosts of image img (of Packages) named prefix-1…n on a new
// network named prefix. On error, what was started is removed.
func New(ctx context.Context, cli *client.Client, img, prefix string, n int) (_ *Hosts, err error) {
	hs := &Hosts{cli: cli}
	defer func() {
		if err != nil {
			hs.Close()
		}
	}()
	if hs.Dir, err = os.MkdirTemp("", "velo-installtest-"); err != nil {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "velo install test")
	if err != nil {
		return nil, err
	}
	hs.Identity = filepath.Join(hs.Dir, "id_ed25519")
	if err := os.WriteFile(hs.Identity, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	hs.KnownHosts = filepath.Join(hs.Dir, "known_hosts")
	if err := os.WriteFile(hs.KnownHosts, nil, 0o600); err != nil {
		return nil, err
	}
	// Internal: the hosts reach each other and this machine, nothing else.
	if _, err := cli.NetworkCreate(ctx, prefix, network.CreateOptions{Driver: "bridge", Internal: true}); err != nil {
		return nil, fmt.Errorf("create network %s: %w", prefix, err)
	}
	hs.Network = prefix
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		id, err := debiantest.Start(ctx, cli, img, name, prefix)
		if id != "" {
			hs.Hosts = append(hs.Hosts, Host{Name: name, ID: id})
		}
		if err != nil {
			return nil, err
		}
	}
	for i := range hs.Hosts {
		h := &hs.Hosts[i]
		if err := debiantest.WaitBooted(ctx, cli, h.ID); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		in, err := cli.ContainerInspect(ctx, h.ID)
		if err != nil {
			return nil, err
		}
		if ep := in.NetworkSettings.Networks[prefix]; ep != nil {
			h.IP = ep.IPAddress
		}
		if h.IP == "" {
			return nil, fmt.Errorf("%s: no address on %s", h.Name, prefix)
		}
		script := fmt.Sprintf(`set -e
useradd --create-home --shell /bin/sh %[1]s
echo '%[1]s ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/%[1]s
install -d -m 0700 -o %[1]s -g %[1]s /home/%[1]s/.ssh
echo '%[2]s' > /home/%[1]s/.ssh/authorized_keys
chown %[1]s:%[1]s /home/%[1]s/.ssh/authorized_keys
chmod 0600 /home/%[1]s/.ssh/authorized_keys
`, User, authorized)
		if out, code, err := debiantest.Exec(ctx, cli, h.ID, "sh", "-c", script); err != nil || code != 0 {
			return nil, fmt.Errorf("%s: add user %s: exit %d, %v: %s", h.Name, User, code, err, out)
		}
	}
	return hs, nil
}

// Exec runs a shell script as root on host i (through Docker, not SSH).
func (hs *Hosts) Exec(ctx context.Context, i int, script string) (string, error) {
	out, code, err := debiantest.Exec(ctx, hs.cli, hs.Hosts[i].ID, "sh", "-c", script)
	if err == nil && code != 0 {
		err = fmt.Errorf("exit status %d", code)
	}
	if err != nil {
		return out, fmt.Errorf("%s: %s: %w: %s", hs.Hosts[i].Name, script, err, out)
	}
	return out, nil
}

// Kill kills host i's container, as a host that loses power.
func (hs *Hosts) Kill(ctx context.Context, i int) error {
	return hs.cli.ContainerKill(ctx, hs.Hosts[i].ID, "KILL")
}

// Close removes the containers, the network and the directory.
func (hs *Hosts) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	for _, h := range hs.Hosts {
		if err := debiantest.Remove(ctx, hs.cli, h.ID); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", h.Name, err))
		}
	}
	if hs.Network != "" {
		if err := hs.cli.NetworkRemove(ctx, hs.Network); err != nil {
			errs = append(errs, fmt.Errorf("remove network %s: %w", hs.Network, err))
		}
	}
	if hs.Dir != "" {
		os.RemoveAll(hs.Dir)
	}
	return errors.Join(errs...)
}

// RandomName returns prefix and a random suffix, for names that runs in
// parallel do not share.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}
