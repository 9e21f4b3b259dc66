package node

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDefaultWorkerDataIgnored: the data directory a worker makes where it
// runs, by default, is never committed by accident.
func TestDefaultWorkerDataIgnored(t *testing.T) {
	out, err := exec.Command("git", "-C", "../..", "check-ignore", "--no-index", DefaultWorkerData+"/").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("git check-ignore %s/: %v %s; want it ignored (.gitignore)", DefaultWorkerData, err, out)
	}
}

// TestRoleConfigs: each role's Config fills its defaults and names what is
// missing or wrong.
func TestRoleConfigs(t *testing.T) {
	ok := Cluster{Addr: "127.0.0.1:8081", DatabaseURL: "postgres://velo@db/velo"}
	if d := (DeploymgrConfig{Cluster: ok}).withDefaults(); d.PublicURL != "http://127.0.0.1:8081" || d.WorkerTimeout != DefaultWorkerTimeout || d.DockerReplicas != 1 {
		t.Errorf("deploymgr defaults: %+v", d)
	}
	if w := (WebUIConfig{Cluster: ok, PublicURL: "https://velo.example"}).withDefaults(); w.DashboardURL != "https://velo.example" {
		t.Errorf("webui dashboard URL defaults to %q, want the public URL", w.DashboardURL)
	}
	if r := (RouterConfig{Cluster: ok}).withDefaults(); r.WorkerTimeout != DefaultWorkerTimeout {
		t.Errorf("router defaults: %+v", r)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{Cluster{Addr: "nowhere", DatabaseURL: ok.DatabaseURL}.validate("webui"), `webui: --addr "nowhere"`},
		{Cluster{Addr: ok.Addr}.validate("router"), "router: VELO_DATABASE_URL is not set"},
		{Cluster{Addr: ok.Addr, DatabaseURL: "sqlite:///x.db"}.validate("deploymgr"), "must be a postgres:// URL"},
		{RouterConfig{Cluster: ok}.validate(), "router: VELO_CLUSTER_TOKEN is not set"},
		{WorkerConfig{Cluster: ok, DataDir: "d"}.validate(), "worker: VELO_CLUSTER_TOKEN is not set"},
		{WorkerConfig{Cluster: ok, ClusterToken: "t"}.validate(), "worker: --data is required"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("error %v, want one saying %q", tc.err, tc.want)
		}
	}
	if err := ok.validate("router"); err != nil {
		t.Errorf("a good cluster config: %v", err)
	}
	for _, tc := range []struct{ adv, addr, want, err string }{
		{"", "10.0.0.5:8082", "http://10.0.0.5:8082", ""},
		{"https://w1.internal/", "0.0.0.0:8082", "https://w1.internal", ""},
		{"", "0.0.0.0:8082", "", "--advertise is required"},
		{"ftp://x", "127.0.0.1:8082", "", `--advertise "ftp://x"`},
	} {
		got, err := advertiseURL(tc.adv, tc.addr)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("advertiseURL(%q, %q) = %q, %v; want %q, %q", tc.adv, tc.addr, got, err, tc.want, tc.err)
		}
	}
}
