package install

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// modulePath is Velo's Go module, how a source checkout is recognized.
const modulePath = "github.com/velo-run/velo"

// SelfOrBuilt is the usual Binaries: this executable for a host of its
// own platform, else velo cross-compiled into dir (static, calling itself
// version) from the source checkout the current directory is in, or an
// error that says how to get a binary for the host.
func SelfOrBuilt(dir, version string) Binaries {
	return func(ctx context.Context, goos, goarch string) (string, string, error) {
		if goos == runtime.GOOS && goarch == runtime.GOARCH {
			exe, err := os.Executable()
			if err != nil {
				return "", "", fmt.Errorf("find this executable: %w", err)
			}
			return exe, "this executable", nil
		}
		root, ok := sourceCheckout()
		if _, err := exec.LookPath("go"); err != nil || !ok {
			return "", "", fmt.Errorf("the host is %s/%s and this velo is built for %s/%s: run velo install from a source checkout of Velo with Go installed (it cross-compiles itself), or with a velo built for the host (GOOS=%s GOARCH=%s CGO_ENABLED=0 go build ./cmd/velo)", goos, goarch, runtime.GOOS, runtime.GOARCH, goos, goarch)
		}
		out := filepath.Join(dir, "velo-"+goos+"-"+goarch)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", out, "./cmd/velo")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("cross-compile velo for %s/%s in %s: %v\n%s", goos, goarch, root, err, msg)
		}
		return out, "cross-compiled from " + root, nil
	}
}

// sourceCheckout finds the root of Velo's module above the current
// directory.
func sourceCheckout() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			ok := sc.Scan() && strings.TrimSpace(sc.Text()) == "module "+modulePath
			f.Close()
			if ok {
				return dir, true
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
