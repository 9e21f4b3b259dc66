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

func TestTagDownloaded(t *testing.T) {
	if a, b := Tag(Host("postgresql")), Tag(append(Host(), Downloaded("postgresql")...)); a == b {
		t.Errorf("installed and downloaded only, one tag %s", a)
	}
	in, dl := split(normalize(append(Host("sudo"), Downloaded("postgresql")...)))
	if strings.Join(in, ",") != "dbus,openssh-server,sudo,systemd,systemd-sysv" || strings.Join(dl, ",") != "postgresql" {
		t.Errorf("split: install %v, download %v", in, dl)
	}
}

// TestHostBoots builds (or reuses) a Host image and boots it: systemd runs
// as PID 1, sshd is active and the extra packages are installed; the
// downloaded one is not installed, and apt installs it in the container
// (which has no network at all) from the image's cache. The list is the
// one cmd/velo's install test uses (installtest.Packages), so that one
// build serves both.
func TestHostBoots(t *testing.T) {
	cli := dockertest.Engine(t)
	img := Image(t, append(Host("sudo"), Downloaded("postgresql")...)...)
	id := Boot(t, cli, img, "velo-debiantest-boot", "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, code, err := Exec(ctx, cli, id, "sh", "-c", "cat /proc/1/comm; command -v sudo; ls /usr/lib/postgresql 2>/dev/null | wc -l")
	if err != nil || code != 0 {
		t.Fatalf("exec: %q, exit %d, %v", out, code, err)
	}
	if f := strings.Fields(out); len(f) != 3 || f[0] != "systemd" || f[1] != "/usr/bin/sudo" || f[2] != "0" {
		t.Errorf("PID 1, sudo, PostgreSQL versions installed: %q, want systemd, /usr/bin/sudo, 0", out)
	}
	out, code, err = Exec(ctx, cli, id, "sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/tmp/apt.log 2>&1 || { tail -n 20 /tmp/apt.log; exit 1; }; ls /usr/lib/postgresql; systemctl is-active postgresql@15-main")
	if err != nil || code != 0 {
		t.Fatalf("apt-get install postgresql without network: %q, exit %d, %v", out, code, err)
	}
	if f := strings.Fields(out); len(f) != 2 || f[0] != "15" || f[1] != "active" {
		t.Errorf("after apt-get install: PostgreSQL versions, cluster state %q, want 15 active", out)
	}
}
