package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/client"
)

// Where the CLI finds its server and token when no flag says.
const (
	envServer      = "VELO_SERVER"
	envToken       = "VELO_TOKEN"
	envData        = "VELO_DATA"
	defaultServer  = "http://127.0.0.1:8080"
	defaultDataDir = ".velo"
	tokenFile      = "admin.token"
)

// clientCommands are the CLI commands that talk to a running Velo.
func clientCommands() []*cobra.Command {
	return []*cobra.Command{
		deployCommand(),
		lsCommand(),
		statusCommand(),
		logsCommand(),
		statsCommand(),
		pauseCommand(),
		resumeCommand(),
		rollbackCommand(),
		promoteCommand(),
		rmCommand(),
		secretsCommand(),
		keysCommand(),
		tokensCommand(),
		eventsCommand(),
		shellCommand(),
	}
}

// conn holds the flags every client command takes to reach the server.
type conn struct {
	server string
	token  string
}

// addFlags registers --server and --token on cmd.
func (c *conn) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.server, "server", "", "Velo server URL (env "+envServer+", default "+defaultServer+")")
	cmd.Flags().StringVar(&c.token, "token", "", "API token (env "+envToken+", else <"+envData+" or ./"+defaultDataDir+">/"+tokenFile+")")
}

// client resolves the server and token (flag, then environment, then the
// token file velo up writes) and returns a client for them.
func (c *conn) client() (*client.Client, error) {
	server, err := resolveServer(c.server)
	if err != nil {
		return nil, err
	}
	token, err := resolveToken(c.token)
	if err != nil {
		return nil, err
	}
	return client.New(server, token, nil), nil
}

// resolveServer picks the server URL and accepts a bare host:port.
func resolveServer(flag string) (string, error) {
	server := flag
	if server == "" {
		server = os.Getenv(envServer)
	}
	if server == "" {
		server = defaultServer
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("bad server URL %q: want http://host:port", server)
	}
	return strings.TrimRight(server, "/"), nil
}

// resolveToken picks the API token: the flag, VELO_TOKEN, else the admin
// token file in the data directory.
func resolveToken(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if t := os.Getenv(envToken); t != "" {
		return t, nil
	}
	dir := os.Getenv(envData)
	if dir == "" {
		dir = defaultDataDir
	}
	path := filepath.Join(dir, tokenFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("no API token: pass --token or set %s (there is no %s; \"velo up\" writes it)", envToken, path)
	case err != nil:
		return "", fmt.Errorf("read API token: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("no API token: %s is empty", path)
	}
	return token, nil
}
