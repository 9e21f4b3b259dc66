package install

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// dialTimeout bounds connecting to a host and the SSH handshake.
const dialTimeout = 20 * time.Second

// Target is one host as the user named it: ssh://user@host[:port].
type Target struct {
	User string
	Host string // name or address, without port
	Port string
}

// ParseTarget reads ssh://user@host[:port] (user defaults to root, port to 22).
func ParseTarget(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "ssh" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return Target{}, fmt.Errorf("host %q: want ssh://user@host[:port]", s)
	}
	t := Target{User: u.User.Username(), Host: u.Hostname(), Port: u.Port()}
	if t.User == "" {
		t.User = "root"
	}
	if t.Port == "" {
		t.Port = "22"
	}
	if n, err := strconv.Atoi(t.Port); err != nil || n < 1 || n > 65535 {
		return Target{}, fmt.Errorf("host %q: port %q", s, t.Port)
	}
	if _, pass := u.User.Password(); pass {
		return Target{}, fmt.Errorf("host %q: no password in the URL (use the SSH agent or --identity)", s)
	}
	return t, nil
}

func (t Target) String() string {
	if t.Port == "22" {
		return "ssh://" + t.User + "@" + t.Host
	}
	return "ssh://" + t.User + "@" + net.JoinHostPort(t.Host, t.Port)
}

func (t Target) addr() string { return net.JoinHostPort(t.Host, t.Port) }

// SSH says how hosts are reached and trusted.
type SSH struct {
	// KnownHosts is the known_hosts file host keys are checked against
	// (default ~/.ssh/known_hosts).
	KnownHosts string
	// AcceptNewHostKey adds the key of a host KnownHosts does not list to
	// it instead of refusing the host. A host whose key differs from the
	// one listed is refused regardless.
	AcceptNewHostKey bool
	// Identity is a private key file; without it the SSH agent
	// (SSH_AUTH_SOCK) and then ~/.ssh/id_ed25519, id_ecdsa and id_rsa are
	// tried.
	Identity string
}

// auth returns the client's authentication methods and what closes them.
func (s SSH) auth() ([]ssh.AuthMethod, func(), error) {
	var methods []ssh.AuthMethod
	closeAll := func() {}
	if s.Identity != "" {
		signer, err := readKey(s.Identity)
		if err != nil {
			return nil, nil, err
		}
		return []ssh.AuthMethod{ssh.PublicKeys(signer)}, closeAll, nil
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if c, err := net.Dial("unix", sock); err == nil {
			ag := agent.NewClient(c)
			methods = append(methods, ssh.PublicKeysCallback(ag.Signers))
			closeAll = func() { c.Close() }
		}
	}
	home, _ := os.UserHomeDir()
	var signers []ssh.Signer
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		if signer, err := readKey(filepath.Join(home, ".ssh", name)); err == nil {
			signers = append(signers, signer)
		}
	}
	if len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	if len(methods) == 0 {
		return nil, nil, errors.New("no SSH credentials: start an SSH agent (SSH_AUTH_SOCK) or give --identity FILE")
	}
	return methods, closeAll, nil
}

func readKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w (a key with a passphrase goes through the SSH agent)", path, err)
	}
	return signer, nil
}

func (s SSH) knownHostsFile() (string, error) {
	if s.KnownHosts != "" {
		return s.KnownHosts, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("known_hosts: %w", err)
	}
	return filepath.Join(home, ".ssh", "known_hosts"), nil
}

// hostKeyCheck returns the callback that checks a host's key against the
// known_hosts file and the host key algorithms to ask the host for (those
// of its listed keys, so that a host with several keys shows the listed
// one).
func (s SSH) hostKeyCheck(t Target) (ssh.HostKeyCallback, []string, error) {
	file, err := s.knownHostsFile()
	if err != nil {
		return nil, nil, err
	}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		if !s.AcceptNewHostKey {
			return nil, nil, fmt.Errorf("%s: no known_hosts file %s: the host's key cannot be checked (connect once with ssh, or pass --accept-new-host-key)", t, file)
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			return nil, nil, err
		}
	}
	check, err := knownhosts.New(file)
	if err != nil {
		return nil, nil, fmt.Errorf("known_hosts %s: %w", file, err)
	}
	// Which keys are listed: ask with a throwaway key.
	var algos []string
	probe, _, _ := ed25519.GenerateKey(nil)
	if pk, err := ssh.NewPublicKey(probe); err == nil {
		var ke *knownhosts.KeyError
		if err := check(t.addr(), &net.TCPAddr{}, pk); errors.As(err, &ke) {
			for _, k := range ke.Want {
				algos = append(algos, algorithmsFor(k.Key.Type())...)
			}
		}
	}
	cb := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) > 0:
			return fmt.Errorf("%s: HOST KEY MISMATCH: it shows a %s key %s, not the one %s lists for it (line %d); refused — if the host was reinstalled, remove that line", t, key.Type(), ssh.FingerprintSHA256(key), file, ke.Want[0].Line)
		case errors.As(err, &ke) && !s.AcceptNewHostKey:
			return fmt.Errorf("%s: unknown host key %s %s (not in %s): refused; check it and pass --accept-new-host-key to trust it", t, key.Type(), ssh.FingerprintSHA256(key), file)
		case errors.As(err, &ke):
			// Hosts are dialled one at a time: no two appends race.
			f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = fmt.Fprintln(f, knownhosts.Line([]string{knownhosts.Normalize(t.addr())}, key))
			return err
		default:
			return err
		}
	}
	return cb, algos, nil
}

// algorithmsFor lists the host key algorithms that show a key of type typ.
func algorithmsFor(typ string) []string {
	if typ == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{typ}
}

// Conn is an SSH connection to one host, running commands as root (through
// sudo -n when the user is not root).
type Conn struct {
	target Target
	client *ssh.Client
	sudo   bool
	close  func()
}

// Dial connects to t, checking its host key.
func (s SSH) Dial(ctx context.Context, t Target) (*Conn, error) {
	methods, closeAuth, err := s.auth()
	if err != nil {
		return nil, err
	}
	check, algos, err := s.hostKeyCheck(t)
	if err != nil {
		closeAuth()
		return nil, err
	}
	cfg := &ssh.ClientConfig{User: t.User, Auth: methods, HostKeyCallback: check, HostKeyAlgorithms: algos, Timeout: dialTimeout}
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", t.addr())
	if err != nil {
		closeAuth()
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	nc.SetDeadline(time.Now().Add(dialTimeout))
	c, chans, reqs, err := ssh.NewClientConn(nc, t.addr(), cfg)
	if err != nil {
		nc.Close()
		closeAuth()
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: ssh: %w", t, err)
	}
	nc.SetDeadline(time.Time{})
	conn := &Conn{target: t, client: ssh.NewClient(c, chans, reqs), sudo: t.User != "root", close: closeAuth}
	return conn, nil
}

// Close ends the connection.
func (c *Conn) Close() error {
	c.close()
	return c.client.Close()
}

// maxOutput bounds what one command's output is kept of.
const maxOutput = 1 << 20

// Run runs the shell script as root on the host with stdin as its input
// (the script itself goes through the session's standard input when stdin
// is nil, so that no secret shows in a process list) and returns its
// output. ctx ends it.
func (c *Conn) Run(ctx context.Context, script string, stdin io.Reader) (string, error) {
	s, err := c.client.NewSession()
	if err != nil {
		return "", fmt.Errorf("%s: session: %w", c.target, err)
	}
	defer s.Close()
	cmd := "sh -c " + quote(script)
	if stdin == nil {
		cmd, stdin = "sh -s", strings.NewReader(script)
	}
	if c.sudo {
		cmd = "sudo -n " + cmd
	}
	var out limitedBuffer
	s.Stdout, s.Stderr, s.Stdin = &out, &out, stdin
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Signal(ssh.SIGKILL)
		s.Close()
		return out.String(), ctx.Err()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// WriteFile writes data to path on the host with mode (owned by root),
// replacing the file at once (written beside it, then renamed).
func (c *Conn) WriteFile(ctx context.Context, path string, mode os.FileMode, data io.Reader) error {
	tmp := path + ".velo-new"
	script := fmt.Sprintf("set -e; umask 077; cat > %s; chmod %o %s; mv -f %s %s", quote(tmp), mode, quote(tmp), quote(tmp), quote(path))
	if _, err := c.Run(ctx, script, data); err != nil {
		return fmt.Errorf("%s: write %s: %w", c.target, path, err)
	}
	return nil
}

// ReadFile returns the file at path on the host, and false when there is
// none.
func (c *Conn) ReadFile(ctx context.Context, path string) (string, bool, error) {
	out, err := c.Run(ctx, fmt.Sprintf("if [ -e %s ]; then echo present; cat %s; else echo absent; fi", quote(path), quote(path)), nil)
	if err != nil {
		return "", false, fmt.Errorf("%s: read %s: %w", c.target, path, err)
	}
	first, rest, _ := strings.Cut(out, "\n")
	return rest, first == "present", nil
}

// quote makes s one word for a POSIX shell.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := maxOutput - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// quoteAll quotes each of ss.
func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = quote(s)
	}
	return out
}
