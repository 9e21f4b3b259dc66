package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/testsupport"
)

const testToken = "t0ken"

// fakeVelo fakes /api/v1 with the shapes of package api: it keeps
// components and deployments in memory and moves an uploaded deployment
// through pending → preparing → ready and live (or failed) as it is polled,
// a step at most every stepEvery: a request with ?wait= is held until the
// next step is due, as the real server holds it until the deployment
// changes.
type fakeVelo struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	components  map[string]*api.Component
	deployments map[int64]*api.Deployment
	nextID      int64
	uploads     map[string][]string // component → file names in its last upload
	requests    []string            // "METHOD path?query"
	auth        []string            // Authorization headers seen
	// failWith, when set, fails every new deployment with that reason and
	// build log.
	failWith, failLog string
	lastStep          time.Time // when a deployment last moved on
}

// stepEvery is how often the fake moves a polled deployment on.
const stepEvery = 200 * time.Millisecond

func newFakeVelo(t *testing.T) *fakeVelo {
	f := &fakeVelo{t: t, components: map[string]*api.Component{}, deployments: map[int64]*api.Deployment{},
		nextID: 1, uploads: map[string][]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/components", f.list)
	mux.HandleFunc("GET /api/v1/components/{name}", f.component)
	mux.HandleFunc("POST /api/v1/components/{name}/deployments", f.upload)
	mux.HandleFunc("GET /api/v1/components/{name}/deployments", f.componentDeployments)
	mux.HandleFunc("GET /api/v1/deployments/{id}", f.poll)
	mux.HandleFunc("POST /api/v1/components/{name}/pause", f.pause)
	mux.HandleFunc("POST /api/v1/components/{name}/rollback", f.rollback)
	mux.HandleFunc("GET /api/v1/components/{name}/stats", f.stats)
	mux.HandleFunc("GET /api/v1/components/{name}/logs", f.logs)
	mux.HandleFunc("DELETE /api/v1/components/{name}", f.delete)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeJSON(w, http.StatusUnauthorized, api.Error{Error: "missing or invalid API token"})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	t.Setenv(envServer, f.srv.URL)
	t.Setenv(envToken, testToken)
	t.Setenv(envData, t.TempDir())
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// addComponent records a live component with deployments numbered ids.
func (f *fakeVelo) addComponent(name, runtime string, ids ...int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now().Add(-time.Hour)
	c := &api.Component{Name: name, Runtime: runtime, Status: "new", URL: f.srv.URL + "/fn/" + name, CreatedAt: now, UpdatedAt: now,
		Instances: []api.Instance{}}
	for _, id := range ids {
		d := &api.Deployment{ID: id, Component: name, Runtime: runtime, Source: "upload", Status: "ready", URL: c.URL, CreatedAt: now, UpdatedAt: now}
		f.deployments[id] = d
		f.nextID = max(f.nextID, id+1)
	}
	if len(ids) > 0 {
		f.setLive(c, f.deployments[ids[len(ids)-1]])
	}
	f.components[name] = c
}

// setLive makes d the live deployment of c. Callers hold f.mu.
func (f *fakeVelo) setLive(c *api.Component, d *api.Deployment) {
	for _, other := range f.deployments {
		if other.Component == c.Name {
			other.Live = false
		}
	}
	d.Live, d.Status = true, "ready"
	live := *d
	live.BuildLog = ""
	c.Live, c.Target, c.Status = &live, nil, "live"
	c.Instances = []api.Instance{{Deployment: d.ID, Worker: "local", State: "ready"}}
}

func (f *fakeVelo) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []api.Component{}
	for _, c := range f.components {
		out = append(out, *c)
	}
	writeJSON(w, 200, out)
}

// lookup finds the component of the request or answers 404. Callers hold f.mu.
func (f *fakeVelo) lookup(w http.ResponseWriter, r *http.Request) *api.Component {
	c := f.components[r.PathValue("name")]
	if c == nil {
		writeJSON(w, 404, api.Error{Error: fmt.Sprintf("component %q not found", r.PathValue("name"))})
	}
	return c
}

func (f *fakeVelo) component(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.lookup(w, r); c != nil {
		writeJSON(w, 200, c)
	}
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

func (f *fakeVelo) upload(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validName.MatchString(name) {
		writeJSON(w, 400, api.Error{Error: fmt.Sprintf("bad component name %q", name)})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/gzip" {
		writeJSON(w, 415, api.Error{Error: "want Content-Type application/gzip, got " + ct})
		return
	}
	files, err := tarGzNames(r.Body)
	if err != nil {
		writeJSON(w, 400, api.Error{Error: "bad archive: " + err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads[name] = files
	c := f.components[name]
	if c == nil {
		c = &api.Component{Name: name, Runtime: "wasm", Status: "new", URL: f.srv.URL + "/fn/" + name, Instances: []api.Instance{}}
		f.components[name] = c
	}
	d := &api.Deployment{ID: f.nextID, Component: name, Runtime: c.Runtime, Source: "upload", Status: "pending",
		URL: c.URL, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	f.nextID++
	f.deployments[d.ID] = d
	c.Status, c.Target = "deploying", d
	writeJSON(w, http.StatusAccepted, d)
}

// tarGzNames lists the regular files of a .tar.gz.
func tarGzNames(r io.Reader) ([]string, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			slices.Sort(names)
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			names = append(names, strings.TrimPrefix(hdr.Name, "./"))
		}
	}
}

func (f *fakeVelo) componentDeployments(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lookup(w, r) == nil {
		return
	}
	out := []api.Deployment{}
	for _, d := range f.deployments {
		if d.Component == r.PathValue("name") {
			c := *d
			c.BuildLog = ""
			out = append(out, c)
		}
	}
	writeJSON(w, 200, out)
}

// poll answers GET /deployments/{id}, moving a deployment one step on.
func (f *fakeVelo) poll(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if r.URL.Query().Get("wait") != "" {
		f.mu.Lock()
		due := f.lastStep.Add(stepEvery)
		f.mu.Unlock()
		select {
		case <-time.After(time.Until(due)):
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastStep = time.Now()
	d := f.deployments[id]
	if d == nil {
		writeJSON(w, 404, api.Error{Error: fmt.Sprintf("deployment %d not found", id)})
		return
	}
	answer := *d
	switch d.Status {
	case "pending":
		d.Status = "preparing"
	case "preparing":
		d.BuildLog = f.failLog
		if f.failWith != "" {
			d.Status, d.Error = "failed", f.failWith
			f.components[d.Component].Target = nil
		} else {
			f.setLive(f.components[d.Component], d)
		}
	}
	writeJSON(w, 200, answer)
}

func (f *fakeVelo) pause(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.lookup(w, r); c != nil {
		c.Paused, c.Status = true, "paused"
		writeJSON(w, 200, c)
	}
}

func (f *fakeVelo) rollback(w http.ResponseWriter, r *http.Request) {
	var body api.Rollback
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeJSON(w, 400, api.Error{Error: "bad body: " + err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.lookup(w, r)
	if c == nil {
		return
	}
	d := f.deployments[body.Deployment]
	if d == nil || d.Component != c.Name {
		writeJSON(w, 404, api.Error{Error: fmt.Sprintf("deployment %d not found", body.Deployment)})
		return
	}
	d.Status = "preparing" // ready again after one poll
	writeJSON(w, http.StatusAccepted, d)
}

func (f *fakeVelo) stats(w http.ResponseWriter, r *http.Request) {
	start := time.Date(2025, 3, 4, 10, 0, 0, 0, time.Local)
	st := api.Stats{Component: r.PathValue("name"), Since: r.URL.Query().Get("since"), Hits: 40, Errors: 2, Buckets: []api.Bucket{
		{Minute: start, Hits: 10, P50ms: 0.5, P99ms: 2},
		{Minute: start.Add(time.Minute)},
		{Minute: start.Add(2 * time.Minute), Hits: 30, Errors: 2, P50ms: 1.25, P99ms: 40},
	}}
	if st.Component == "caller" { // a component that calls out
		st.Buckets[0].Outbound, st.Buckets[0].OutboundErrors = 12, 0
		st.Buckets[2].Outbound, st.Buckets[2].OutboundErrors = 31, 3
		st.Outbound, st.OutboundErrors = 43, 3
	}
	writeJSON(w, 200, st)
}

func (f *fakeVelo) logs(w http.ResponseWriter, r *http.Request) {
	at := time.Date(2025, 3, 4, 10, 0, 0, 0, time.Local)
	lines := []api.LogLine{
		{ID: 1, Time: at, Deployment: 3, Stream: "stdout", Line: "hello"},
		{ID: 2, Time: at.Add(time.Second), Deployment: 3, Stream: "stderr", Line: "oops"},
	}
	if r.URL.Query().Get("follow") != "1" {
		writeJSON(w, 200, lines)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, ": keepalive\n\n")
	for _, l := range lines {
		data, _ := json.Marshal(l)
		fmt.Fprintf(w, "id: %d\ndata: %s\n\n", l.ID, data)
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func (f *fakeVelo) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.lookup(w, r); c != nil {
		delete(f.components, c.Name)
		w.WriteHeader(http.StatusNoContent)
	}
}

// get returns a copy of a component, nil if there is none.
func (f *fakeVelo) get(name string) *api.Component {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.components[name]
	if !ok {
		return nil
	}
	cp := *c
	return &cp
}

func (f *fakeVelo) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// velo runs the CLI and returns its output and exit code.
func velo(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(t.Context(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// componentDir writes a component: velo.toml plus files.
func componentDir(t *testing.T, toml string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "my-app")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if toml != "" {
		files = mapWith(files, "velo.toml", toml)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mapWith(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

func TestDeploy(t *testing.T) {
	f := newFakeVelo(t)
	dir := componentDir(t, `name = "hello"
module = "hello.wasm"
build = "echo compiling; printf '\\0asm' > hello.wasm"
`, map[string]string{"main.c": "int main(){}", ".gitignore": "*.wasm\n*.o\n", "main.o": "obj"})

	stdout, stderr, code := velo(t, "deploy", dir)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	want := []string{
		`building: echo compiling; printf '\0asm' > hello.wasm`,
		"compiling",
		"packing " + dir,
		"uploading 1 KiB",
		"deployment #1: preparing…",
		"live at " + f.srv.URL + "/fn/hello",
	}
	if got := strings.Split(strings.TrimSpace(stdout), "\n"); !slices.Equal(got, want) {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, strings.Join(want, "\n"))
	}
	if stderr != "" {
		t.Errorf("stderr: %s", stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.uploads["hello"]; !slices.Equal(got, []string{".gitignore", "hello.wasm", "main.c", "velo.toml"}) {
		t.Errorf("uploaded files %v; want the git-ignored module but not main.o", got)
	}
	if polls := countPrefix(f.requests, "GET /api/v1/deployments/1"); polls != 3 {
		t.Errorf("%d polls, want 3 (pending, preparing, live)", polls)
	}
}

// TestDeployPacksFiles checks that the files velo.toml mounts are packed
// even when the ignore file excludes them (a built site usually is), and
// that the rest of what is ignored stays out.
func TestDeployPacksFiles(t *testing.T) {
	f := newFakeVelo(t)
	dir := componentDir(t, `name = "site"
module = "app.wasm"
files = ["public/**", { source = "gen", destination = "/gen" }]
`, map[string]string{"app.wasm": "\x00asm", ".gitignore": "public/\ngen/\n*.log\n", "debug.log": "x"})
	for name, body := range map[string]string{"public/index.html": "<p>", "public/css/a.css": "a", "gen/data.json": "{}"} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if stdout, stderr, code := velo(t, "deploy", dir); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{".gitignore", "app.wasm", "gen/data.json", "public/css/a.css", "public/index.html", "velo.toml"}
	if got := f.uploads["site"]; !slices.Equal(got, want) {
		t.Errorf("uploaded files %v, want %v", got, want)
	}
}

func countPrefix(list []string, prefix string) int {
	n := 0
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func TestDeployNameAndNoBuild(t *testing.T) {
	f := newFakeVelo(t)
	dir := componentDir(t, `module = "app.wasm"
build = "exit 9"
`, map[string]string{"app.wasm": "\x00asm"})
	stdout, stderr, code := velo(t, "deploy", "--no-build", "--name", "other", dir)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "building") {
		t.Errorf("built despite --no-build:\n%s", stdout)
	}
	if !slices.Contains(f.seen(), "POST /api/v1/components/other/deployments") {
		t.Errorf("requests %v, want upload to other", f.seen())
	}

	// Without --name the directory names the component.
	if _, stderr, code := velo(t, "deploy", "--no-build", dir); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !slices.Contains(f.seen(), "POST /api/v1/components/my-app/deployments") {
		t.Errorf("requests %v, want upload to my-app", f.seen())
	}
}

func TestDeployFailed(t *testing.T) {
	f := newFakeVelo(t)
	f.failWith = `module does not export "_start"`
	var log strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&log, "log line %d\n", i)
	}
	f.failLog = log.String()
	dir := componentDir(t, `name = "hello"`, map[string]string{"hello.wasm": "\x00asm"})

	stdout, stderr, code := velo(t, "deploy", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "live at") {
		t.Errorf("stdout claims success:\n%s", stdout)
	}
	if !strings.HasSuffix(stderr, "velo: deployment #1 failed: module does not export \"_start\"\n") {
		t.Errorf("stderr does not end with the reason:\n%s", stderr)
	}
	if !strings.Contains(stderr, "build log (last 20 of 30 lines):\n  | log line 11\n") || !strings.Contains(stderr, "  | log line 30\n") ||
		strings.Contains(stderr, "log line 10\n") {
		t.Errorf("stderr lacks the build log's tail:\n%s", stderr)
	}
}

func TestDeployBuildFails(t *testing.T) {
	f := newFakeVelo(t)
	dir := componentDir(t, `build = "echo nope >&2; exit 3"`, nil)
	stdout, stderr, code := velo(t, "deploy", dir)
	if code != 3 {
		t.Fatalf("exit %d, want the build's 3\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if stderr != "nope\nvelo: build failed: exit status 3\n" {
		t.Errorf("stderr = %q", stderr)
	}
	if len(f.seen()) != 0 {
		t.Errorf("requests after a failed build: %v", f.seen())
	}
}

func TestDeployErrors(t *testing.T) {
	newFakeVelo(t)
	tests := []struct {
		name  string
		toml  string
		files map[string]string
		args  []string
		want  string
	}{
		{"bad manifest", `prot = 8080`, nil, nil, `velo: velo.toml: unknown key "prot"`},
		{"server rejects the name", "", map[string]string{"a.wasm": "\x00asm"}, []string{"--name", "Bad_Name"}, `velo: bad component name "Bad_Name"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := componentDir(t, tt.toml, tt.files)
			_, stderr, code := velo(t, append([]string{"deploy", dir}, tt.args...)...)
			if code != 1 || !strings.HasPrefix(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.want)
			}
		})
	}
	_, stderr, code := velo(t, "deploy", filepath.Join(t.TempDir(), "missing"))
	if code != 1 || !strings.Contains(stderr, "no such file or directory") {
		t.Errorf("missing dir: exit %d, stderr %q", code, stderr)
	}
}

func TestDeployTimeout(t *testing.T) {
	newFakeVelo(t)
	dir := componentDir(t, "", map[string]string{"a.wasm": "\x00asm"})
	_, stderr, code := velo(t, "deploy", "--timeout", "300ms", dir)
	// The fake goes live on the third poll, 400 ms in.
	if code != 1 || stderr != "velo: deployment #1 is not live after 300ms (last status: preparing)\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestLs(t *testing.T) {
	f := newFakeVelo(t)
	f.addComponent("web", "docker", 4, 9)
	f.addComponent("api", "wasm", 12)
	f.addComponent("fresh", "" /* no deployment */)
	stdout, stderr, code := velo(t, "ls")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	u := f.srv.URL + "/fn/"
	want := "" +
		"NAME   RUNTIME  STATUS  DEPLOYMENT  URL\n" +
		"api    wasm     live    #12         " + u + "api\n" +
		"fresh  -        new     -           " + u + "fresh\n" +
		"web    docker   live    #9          " + u + "web\n"
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
}

func TestLsEmpty(t *testing.T) {
	newFakeVelo(t)
	stdout, _, code := velo(t, "ls")
	if code != 0 || !strings.Contains(stdout, "no components yet") {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

func TestTokenFromFile(t *testing.T) {
	f := newFakeVelo(t)
	t.Setenv(envToken, "")
	data := t.TempDir()
	t.Setenv(envData, data)
	if err := os.WriteFile(filepath.Join(data, "admin.token"), []byte("  "+testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := velo(t, "ls"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// --token wins over the file.
	_, stderr, code := velo(t, "ls", "--token", "other")
	if code != 1 || stderr != "velo: missing or invalid API token\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(f.auth, []string{"Bearer " + testToken, "Bearer other"}) {
		t.Errorf("Authorization headers %q", f.auth)
	}
}

func TestTokenDefaultDir(t *testing.T) {
	newFakeVelo(t)
	t.Setenv(envToken, "")
	t.Setenv(envData, "")
	t.Chdir(t.TempDir())
	if err := os.Mkdir(".velo", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(".velo", "admin.token"), []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := velo(t, "ls"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestMissingToken(t *testing.T) {
	f := newFakeVelo(t)
	t.Setenv(envToken, "")
	data := t.TempDir()
	t.Setenv(envData, data)
	_, stderr, code := velo(t, "ls")
	want := fmt.Sprintf("velo: no API token: pass --token or set VELO_TOKEN (there is no %s; \"velo up\" writes it)\n", filepath.Join(data, "admin.token"))
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr %q, want %q", code, stderr, want)
	}
	if err := os.WriteFile(filepath.Join(data, "admin.token"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, _ := velo(t, "ls"); !strings.Contains(stderr, "admin.token is empty") {
		t.Errorf("empty token file: stderr %q", stderr)
	}
	if len(f.seen()) != 0 {
		t.Errorf("requests without a token: %v", f.seen())
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv(envToken, testToken)
	t.Setenv(envServer, "")
	_, stderr, code := velo(t, "ls", "--server", addr)
	want := "velo: cannot reach Velo at http://" + addr + " (is \"velo up\" running?)\n"
	if code != 1 || stderr != want {
		t.Errorf("exit %d, stderr %q, want %q", code, stderr, want)
	}
}

func TestStatus(t *testing.T) {
	f := newFakeVelo(t)
	f.addComponent("web", "docker", 4, 9)
	stdout, stderr, code := velo(t, "status", "web")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"name:     web\n", "status:   live\n", "url:      " + f.srv.URL + "/fn/web\n", "live:     #9, upload, 1h ago\n",
		"  WORKER  DEPLOYMENT  STATE  ERROR\n  local   #9          ready  -\n", "  #9  ready (live)  upload  1h ago   -\n  #4  ready         upload  1h ago   -\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	_, stderr, code = velo(t, "status", "nope")
	if code != 1 || stderr != "velo: component \"nope\" not found\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestLogs(t *testing.T) {
	f := newFakeVelo(t)
	stdout, stderr, code := velo(t, "logs", "web", "--tail", "5")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "2025-03-04 10:00:00.000 #3 stdout hello\n2025-03-04 10:00:01.000 #3 stderr oops\n"
	if stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	if !slices.Contains(f.seen(), "GET /api/v1/components/web/logs?tail=5") {
		t.Errorf("requests %v", f.seen())
	}
}

func TestLogsFollow(t *testing.T) {
	newFakeVelo(t)
	var out testsupport.SyncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int)
	go func() { done <- run(ctx, []string{"logs", "-f", "web"}, &out, io.Discard) }()
	want := "2025-03-04 10:00:00.000 #3 stdout hello\n2025-03-04 10:00:01.000 #3 stderr oops\n"
	testsupport.Eventually(t, 5*time.Second, "the two log lines", func() bool { return out.String() == want })
	cancel() // Ctrl-C
	if code := <-done; code != 0 {
		t.Errorf("exit %d after interrupt, want 0", code)
	}
	if out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
}

func TestStats(t *testing.T) {
	f := newFakeVelo(t)
	stdout, stderr, code := velo(t, "stats", "web", "--since", "3m")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "" +
		"MINUTE            HITS  ERRORS  P50     P99\n" +
		"2025-03-04 10:00  10    0       0.50ms  2.00ms\n" +
		"2025-03-04 10:02  30    2       1.25ms  40ms\n" +
		"\n" +
		"hits/min  ▄▁█\n" +
		"total     40 hits, 2 errors (5.0%) in the last 3m\n"
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
	if !slices.Contains(f.seen(), "GET /api/v1/components/web/stats?since=3m") {
		t.Errorf("requests %v", f.seen())
	}
	if _, stderr, code := velo(t, "stats", "web", "--since", "yesterday"); code != 1 || !strings.Contains(stderr, `bad --since "yesterday"`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// TestStatsOutbound: a component's outbound HTTP calls get their columns
// and a total line.
func TestStatsOutbound(t *testing.T) {
	newFakeVelo(t)
	stdout, stderr, code := velo(t, "stats", "caller", "--since", "3m")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := "" +
		"MINUTE            HITS  ERRORS  P50     P99     OUTBOUND  REFUSED/FAILED\n" +
		"2025-03-04 10:00  10    0       0.50ms  2.00ms  12        0\n" +
		"2025-03-04 10:02  30    2       1.25ms  40ms    31        3\n" +
		"\n" +
		"hits/min  ▄▁█\n" +
		"total     40 hits, 2 errors (5.0%) in the last 3m\n" +
		"outbound  43 HTTP calls, 3 refused or failed\n"
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
}

func TestSparkline(t *testing.T) {
	tests := []struct {
		in   []int64
		want string
	}{
		{nil, ""},
		{[]int64{0, 0}, "▁▁"},
		{[]int64{0, 1, 100}, "▁▂█"},
		{[]int64{5, 5}, "██"},
		{[]int64{1, 2, 3, 4, 5, 6}, "▃▄▅▆▇█"},
	}
	for _, tt := range tests {
		if got := sparkline(tt.in); got != tt.want {
			t.Errorf("sparkline(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPauseRollbackRm(t *testing.T) {
	f := newFakeVelo(t)
	f.addComponent("web", "wasm", 4, 9)

	if stdout, stderr, code := velo(t, "pause", "web"); code != 0 || stdout != "paused web\n" {
		t.Errorf("pause: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	stdout, stderr, code := velo(t, "rollback", "web", "#4")
	if code != 0 {
		t.Fatalf("rollback: exit %d: %s", code, stderr)
	}
	if want := "rolling back web to deployment #4\nlive at " + f.srv.URL + "/fn/web\n"; stdout != want {
		t.Errorf("rollback stdout %q, want %q", stdout, want)
	}
	if live := f.get("web").Live.ID; live != 4 {
		t.Errorf("live = #%d after rollback, want #4", live)
	}
	if _, stderr, code := velo(t, "rollback", "web", "77"); code != 1 || stderr != "velo: deployment 77 not found\n" {
		t.Errorf("rollback to unknown: exit %d, stderr %q", code, stderr)
	}

	if !isatty.IsTerminal(os.Stdin.Fd()) {
		_, stderr, code := velo(t, "rm", "web")
		if code != 1 || !strings.Contains(stderr, "confirm with --yes") {
			t.Errorf("rm without --yes: exit %d, stderr %q", code, stderr)
		}
		if slices.Contains(f.seen(), "DELETE /api/v1/components/web") {
			t.Fatal("deleted without confirmation")
		}
	}
	if stdout, stderr, code := velo(t, "rm", "--yes", "web"); code != 0 || stdout != "deleted web\n" {
		t.Errorf("rm --yes: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if f.get("web") != nil {
		t.Error("web still there")
	}
}
