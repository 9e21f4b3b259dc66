package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/testsupport"
)

// secretEnvWasm answers /get?NAME with NAME's value and prints it to
// stderr on /leak?NAME (testdata/secretenv.c).
//
//go:embed testdata/secretenv.wasm
var secretEnvWasm []byte

// The values the tests set: distinctive enough that finding one anywhere
// means it leaked.
const (
	apiKeyValue = "sk-live-7f3a9c1e-never-in-plaintext"
	tokenValue  = "tok-2b8d-from-stdin"
)

// vaultFiles is the component the secrets tests deploy.
func vaultFiles(toml string) map[string][]byte {
	return map[string][]byte{"velo.toml": []byte(toml), "secretenv.wasm": secretEnvWasm}
}

const vaultToml = "name = \"vault\"\nmodule = \"secretenv.wasm\"\n[env]\nPLAIN = \"plain-value\"\n"

// TestSecretsSQLite and TestSecretsPostgres drive secrets through the real
// CLI against a whole in-process Velo: set (also from stdin), list, the
// value reaching the WASM instance without a redeploy, redaction from its
// logs, [env] clashes refused both ways, removal, key rotation, a restart
// — and after all that the value is nowhere in the database in plaintext.
func TestSecretsSQLite(t *testing.T) {
	t.Parallel()
	testSecrets(t, "")
}

func TestSecretsPostgres(t *testing.T) {
	t.Parallel()
	testSecrets(t, pgtest.URL(t))
}

// veloIn runs a CLI command with stdin.
func (s *spine) veloIn(stdin string, wantCode int, args ...string) string {
	s.t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--server", s.n.URL, "--token", s.n.Token)
	if code := runWith(s.ctx, args, strings.NewReader(stdin), &out, &errOut); code != wantCode {
		s.t.Fatalf("velo %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out.String(), errOut.String())
	}
	return out.String() + errOut.String()
}

func testSecrets(t *testing.T, db string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir(), db: db}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	if _, err := c.Deploy(ctx, "vault", bytes.NewReader(archivetest.TarGz(t, vaultFiles(vaultToml)))); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(s.t, 15*time.Second, "vault live", func() bool { res, _ := s.get("/fn/vault/get?PLAIN"); return res.StatusCode == 200 })
	if _, body := s.get("/fn/vault/get?API_KEY"); body != "(unset)" {
		t.Fatalf("before any secret, API_KEY = %q", body)
	}

	// velo up made its key file, 0600.
	if fi, err := os.Stat(filepath.Join(s.data, secrets.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}

	// Set two, one from stdin; both reach the next requests, no redeploy.
	out := s.veloIn(tokenValue+"\n", 0, "secrets", "set", "vault", "API_KEY="+apiKeyValue, "TOKEN=-")
	if !strings.Contains(out, "set API_KEY on vault") || !strings.Contains(out, "set TOKEN on vault") || strings.Contains(out, apiKeyValue) {
		t.Fatalf("velo secrets set said:\n%s", out)
	}
	// Each secret is its own PUT, so each reaches the instances on its
	// own: wait for both (TOKEN's from stdin, one trailing newline dropped).
	testsupport.Eventually(s.t, 15*time.Second, "API_KEY and TOKEN in the instance's environment", func() bool {
		_, key := s.get("/fn/vault/get?API_KEY")
		_, token := s.get("/fn/vault/get?TOKEN")
		return key == apiKeyValue && token == tokenValue
	})
	if _, body := s.get("/fn/vault/get?PLAIN"); body != "plain-value" {
		t.Errorf("[env] PLAIN = %q beside the secrets", body)
	}

	// Listing shows names, never values.
	out = s.velo(0, "secrets", "ls", "vault")
	if !strings.Contains(out, "API_KEY") || !strings.Contains(out, "TOKEN") || !strings.Contains(out, "just now") ||
		strings.Contains(out, apiKeyValue) || strings.Contains(out, tokenValue) {
		t.Errorf("velo secrets ls:\n%s", out)
	}
	// --preview marks a secret for the component's previews; ls shows it.
	if out := s.velo(0, "secrets", "set", "vault", "--preview", "SANDBOX=sandbox-value"); !strings.Contains(out, "for its previews too") {
		t.Errorf("velo secrets set --preview: %s", out)
	}
	out = s.velo(0, "secrets", "ls", "vault")
	if !regexp.MustCompile(`(?m)^SANDBOX\s+yes\s`).MatchString(out) || !regexp.MustCompile(`(?m)^API_KEY\s+-\s`).MatchString(out) {
		t.Errorf("velo secrets ls after --preview:\n%s", out)
	}
	s.velo(0, "secrets", "rm", "vault", "SANDBOX")

	// A component printing its secret: the logs hold the name, not the value.
	if _, body := s.get("/fn/vault/leak?API_KEY"); body != apiKeyValue {
		t.Fatalf("leak answered %q", body)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the leak in the logs", func() bool {
		return strings.Contains(s.velo(0, "logs", "vault"), "the value of API_KEY is [secret API_KEY], oops")
	})
	if out := s.velo(0, "logs", "vault"); strings.Contains(out, apiKeyValue) {
		t.Errorf("a secret value reached the logs:\n%s", out)
	}

	// Refused: a secret named like an [env] variable of the live
	// deployment, and a deployment whose [env] names a secret.
	out = s.veloIn("", 1, "secrets", "set", "vault", "PLAIN=x")
	if !strings.Contains(out, "[env]") || !strings.Contains(out, "PLAIN") {
		t.Errorf("setting a secret that [env] sets too:\n%s", out)
	}
	clash := vaultToml + "API_KEY = \"in-the-repo\"\n"
	dir := t.TempDir()
	for name, b := range vaultFiles(clash) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out = s.velo(1, "deploy", dir)
	if !strings.Contains(out, "[env] sets API_KEY, also set as secret") || !strings.Contains(out, "velo secrets rm vault API_KEY") {
		t.Errorf("deploying an [env] that names a secret:\n%s", out)
	}
	for _, bad := range [][]string{{"vault", "PATH_INFO=x"}, {"vault", "HTTP_X=x"}, {"vault", "NOEQUALS"}, {"vault", "A=-", "B=-"}} {
		s.veloIn("v", 1, append([]string{"secrets", "set"}, bad...)...)
	}
	s.veloIn("", 1, "secrets", "set", "nope", "A=b") // no such component

	// The API never answers a value.
	for _, path := range []string{"/api/v1/components/vault/secrets", "/api/v1/components/vault", "/api/v1/components/vault/deployments"} {
		req, _ := http.NewRequest("GET", s.n.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.n.Token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || bytes.Contains(b, []byte(apiKeyValue)) || bytes.Contains(b, []byte(tokenValue)) {
			t.Errorf("GET %s = %d %s", path, res.StatusCode, b)
		}
	}

	// Removal reaches the instance too.
	s.velo(0, "secrets", "rm", "vault", "TOKEN")
	testsupport.Eventually(s.t, 15*time.Second, "TOKEN gone from the environment", func() bool {
		_, body := s.get("/fn/vault/get?TOKEN")
		return body == "(unset)"
	})
	s.velo(1, "secrets", "rm", "vault", "TOKEN")

	// Rotation: a new key in the key file, every row re-sealed, the old
	// key dropped, the value unchanged.
	before := storedSecrets(t, s)
	out = s.velo(0, "secrets", "rotate-key")
	if !strings.Contains(out, "re-encrypted 1 secret(s)") {
		t.Fatalf("velo secrets rotate-key:\n%s", out)
	}
	after := storedSecrets(t, s)
	kr, err := secrets.LoadFile(filepath.Join(s.data, secrets.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 1 || len(after) != 1 || before[0].keyID == after[0].keyID || after[0].keyID != kr.Primary() || len(kr.IDs()) != 1 {
		t.Errorf("rotation: rows before %+v, after %+v, key file ids %v", before, after, kr.IDs())
	}
	if v, err := kr.Open("vault", "API_KEY", after[0].keyID, after[0].sealed); err != nil || v != apiKeyValue {
		t.Errorf("the rotated row opens to %q, %v", v, err)
	}

	// A restart delivers the secrets again (with the rotated key file).
	s.n.Close()
	s.start()
	testsupport.Eventually(s.t, 15*time.Second, "API_KEY after a restart", func() bool {
		_, body := s.get("/fn/vault/get?API_KEY")
		return body == apiKeyValue
	})

	// And nowhere in the database, in any table, is a value in plaintext.
	assertNotStored(t, s, apiKeyValue, tokenValue)
}

type storedRow struct {
	component, name, keyID string
	sealed                 []byte
}

// storedSecrets reads the raw rows of the secrets table.
func storedSecrets(t *testing.T, s *spine) []storedRow {
	t.Helper()
	list, err := s.n.Store.Secrets(s.ctx, "vault")
	if err != nil {
		t.Fatal(err)
	}
	var out []storedRow
	for _, r := range list {
		out = append(out, storedRow{r.Component, r.Name, r.KeyID, r.Sealed})
	}
	return out
}

// assertNotStored checks that no value is in the database: for SQLite,
// anywhere in the database file and its write-ahead log; for Postgres, in
// any row of any table, read back as text.
func assertNotStored(t *testing.T, s *spine, values ...string) {
	t.Helper()
	if s.db == "" {
		s.n.Close() // settle the WAL
		files, _ := filepath.Glob(filepath.Join(s.data, "velo.db*"))
		if len(files) == 0 {
			t.Fatal("no database file")
		}
		found := false
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			found = found || bytes.Contains(b, []byte("API_KEY"))
			for _, v := range values {
				if bytes.Contains(b, []byte(v)) {
					t.Errorf("%s holds the secret value %q in plaintext", filepath.Base(f), v)
				}
			}
		}
		if !found {
			t.Error("the database files do not hold the secret's name either: is this the right file?")
		}
		return
	}
	conn, err := pgx.Connect(s.ctx, s.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(s.ctx)
	rows, err := conn.Query(s.ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, table := range tables {
		rows, err := conn.Query(s.ctx, fmt.Sprintf(`SELECT t::text FROM %s t`, pgx.Identifier{table}.Sanitize()))
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range texts {
			if table == "secrets" {
				seen++
			}
			for _, v := range values {
				if strings.Contains(text, v) {
					t.Errorf("table %s holds the secret value %q in plaintext: %.200s", table, v, text)
				}
			}
		}
	}
	if seen == 0 {
		t.Error("the secrets table is empty: nothing was checked")
	}
}

// TestSecretsRotateEnvKeys rotates the way a cluster does, with
// VELO_SECRETS_KEY: the operator puts the new key first, rotate-key
// re-seals, then the old key can go.
func TestSecretsRotateEnvKeys(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	oldKey, newKey := secrets.NewKey(), secrets.NewKey()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	start := func(keys string) {
		n, err := startNode(ctx, s.data, keys)
		if err != nil {
			t.Fatal(err)
		}
		s.n = n
		t.Cleanup(func() { n.Close() })
	}
	start(oldKey)
	if _, err := os.Stat(filepath.Join(s.data, secrets.KeyFile)); err == nil {
		t.Error("a key file was made although VELO_SECRETS_KEY was set")
	}
	c := client.New(s.n.URL, s.n.Token, nil)
	if _, err := c.Deploy(ctx, "vault", bytes.NewReader(archivetest.TarGz(t, vaultFiles(vaultToml)))); err != nil {
		t.Fatal(err)
	}
	s.veloIn("", 0, "secrets", "set", "vault", "API_KEY="+apiKeyValue)
	out := s.velo(0, "secrets", "rotate-key")
	if !strings.Contains(out, "re-encrypted 0") || !strings.Contains(out, "put a new key first") {
		t.Errorf("rotate-key with one fixed key:\n%s", out)
	}

	s.n.Close()
	start(newKey + "," + oldKey)
	testsupport.Eventually(s.t, 15*time.Second, "the old value opens under new,old", func() bool {
		_, body := s.get("/fn/vault/get?API_KEY")
		return body == apiKeyValue
	})
	out = s.velo(0, "secrets", "rotate-key")
	if !strings.Contains(out, "re-encrypted 1") || !strings.Contains(out, "remove the other keys") {
		t.Errorf("rotate-key under new,old:\n%s", out)
	}

	s.n.Close()
	start(newKey)
	testsupport.Eventually(s.t, 15*time.Second, "the value under the new key alone", func() bool {
		_, body := s.get("/fn/vault/get?API_KEY")
		return body == apiKeyValue
	})

	// A worker without the key that sealed a secret says so: the
	// deployment fails naming the key and the variable.
	s.n.Close()
	start(secrets.NewKey())
	d, err := client.New(s.n.URL, s.n.Token, nil).Deploy(ctx, "vault", bytes.NewReader(archivetest.TarGz(t, vaultFiles(vaultToml+"# again\n"))))
	if err != nil {
		t.Fatal(err)
	}
	var dep struct {
		Status, Error string
	}
	testsupport.Eventually(s.t, 15*time.Second, "the deployment without the key fails", func() bool {
		got, err := client.New(s.n.URL, s.n.Token, nil).Deployment(ctx, d.ID)
		dep.Status, dep.Error = got.Status, got.Error
		return err == nil && got.Status == "failed"
	})
	if !strings.Contains(dep.Error, secrets.EnvKey) || !strings.Contains(dep.Error, "API_KEY") {
		t.Errorf("failure without the key: %q", dep.Error)
	}
}

// TestSecretsDuringTraffic changes a secret over and over while clients
// call the component: no call fails, each sees one of the values set (never
// a torn or empty one), and the last value wins.
func TestSecretsDuringTraffic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	if _, err := c.Deploy(ctx, "vault", bytes.NewReader(archivetest.TarGz(t, vaultFiles(vaultToml)))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSecret(ctx, "vault", "ROTATING", "value-000"); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the first value", func() bool { _, b := s.get("/fn/vault/get?ROTATING"); return b == "value-000" })

	const changes = 40
	var (
		stop  atomic.Bool
		calls atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		bad   []string
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				res, err := http.Get(s.n.URL + "/fn/vault/get?ROTATING")
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				calls.Add(1)
				var n int
				if _, err := fmt.Sscanf(string(b), "value-%03d", &n); res.StatusCode != 200 || err != nil || n > changes || len(b) != 9 {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d %q", res.StatusCode, b))
					mu.Unlock()
				}
			}
		}()
	}
	for i := 1; i <= changes; i++ {
		if _, err := c.SetSecret(ctx, "vault", "ROTATING", fmt.Sprintf("value-%03d", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the last value", func() bool {
		_, b := s.get("/fn/vault/get?ROTATING")
		return b == fmt.Sprintf("value-%03d", changes)
	})
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d calls went wrong while the secret changed, e.g. %v", len(bad), calls.Load(), bad[:min(len(bad), 5)])
	}
	if calls.Load() < 20 {
		t.Errorf("only %d calls during the changes", calls.Load())
	}
	// The logs say what happened, never a value.
	lines, err := c.Logs(ctx, "vault", 1000)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(lines)
	if !bytes.Contains(data, []byte("secrets changed")) || bytes.Contains(data, []byte("value-0")) {
		t.Errorf("logs: %s", data)
	}
}

// startNode starts an in-process Velo on SQLite in data with keys as its
// VELO_SECRETS_KEY.
func startNode(ctx context.Context, data, keys string) (*node.Node, error) {
	return node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: data, SecretsKey: keys})
}
