package debiantest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/worker/docker/dockertest"
)

func TestTag(t *testing.T) {
	a := Tag([]string{"sudo", "postgresql", "sudo"})
	if b := Tag([]string{"postgresql", "sudo"}); a != b {
		t.Errorf("same list in another order, repeated name: %s, %s", a, b)
	}
	if b := Tag([]string{"postgresql"}); a == b {
		t.Errorf("different lists, one tag %s", a)
	}
	if !strings.HasPrefix(a, Repository+":"+Suite+"-") {
		t.Errorf("tag %s, want it in %s, named for %s", a, Repository, Suite)
	}
}

// TestHostBoots builds (or reuses) a Host image and boots it: systemd runs
// as PID 1, sshd is active and the extra packages are installed. The list
// is the one cmd/velo's install test uses, so that one build serves both.
func TestHostBoots(t *testing.T) {
	cli := dockertest.Engine(t)
	img := Image(t, Host("postgresql", "sudo")...)
	id := Boot(t, cli, img, "velo-debiantest-boot", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, code, err := Exec(ctx, cli, id, "sh", "-c", "cat /proc/1/comm; command -v sudo; ls /usr/lib/postgresql")
	if err != nil || code != 0 {
		t.Fatalf("exec: %q, exit %d, %v", out, code, err)
	}
	if f := strings.Fields(out); len(f) != 3 || f[0] != "systemd" || f[1] != "/usr/bin/sudo" || f[2] != "15" {
		t.Errorf("PID 1, sudo, PostgreSQL versions: %q, want systemd, /usr/bin/sudo, 15", out)
	}
}
