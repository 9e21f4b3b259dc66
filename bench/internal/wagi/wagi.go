// Package wagi is the benchmark's peer for Velo's WebAssembly runtime: the
// smallest honest WAGI host on wazero that a Go programmer would write. It
// compiles a module once and runs a fresh instance of it per call, with the
// request's CGI variables set through wazero's ModuleConfig.WithEnv, the body
// on stdin and stdout collected in a buffer. It has none of Velo's routing,
// limits, logs, pooling or statistics; that difference is what the
// benchmark measures.
package wagi

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Host runs one compiled WAGI module. It is safe for concurrent use.
type Host struct {
	rt   wazero.Runtime
	mod  wazero.CompiledModule
	base wazero.ModuleConfig
}

// Config configures a Host. The zero value is usable.
type Config struct {
	// Env is set in every instance's environment before the request's
	// CGI variables, like a Velo manifest's [env].
	Env [][2]string
	// Cache, when set, is shared with other hosts so that compiling the
	// same module again is a cache hit, as it is in Velo.
	Cache wazero.CompilationCache
}

// New compiles bin and returns a Host that runs it.
func New(ctx context.Context, bin []byte, cfg Config) (*Host, error) {
	rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(true)
	if cfg.Cache != nil {
		rc = rc.WithCompilationCache(cfg.Cache)
	}
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("instantiate wasi: %w", err)
	}
	mod, err := rt.CompileModule(ctx, bin)
	if err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("compile: %w", err)
	}
	// The same clocks and random source Velo grants; WithName("") lets
	// instances run concurrently.
	base := wazero.NewModuleConfig().WithName("").
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader)
	for _, kv := range cfg.Env {
		base = base.WithEnv(kv[0], kv[1])
	}
	return &Host{rt: rt, mod: mod, base: base}, nil
}

// Close releases the compiled module and the runtime.
func (h *Host) Close(ctx context.Context) error { return h.rt.Close(ctx) }

// Run instantiates the module once with env (name, value pairs) and args,
// stdin as its standard input, and writes its standard output to stdout.
func (h *Host) Run(ctx context.Context, env [][2]string, args []string, stdin []byte, stdout io.Writer) error {
	cfg := h.base.WithArgs(args...).
		WithStdin(bytes.NewReader(stdin)).
		WithStdout(stdout).
		WithStderr(io.Discard)
	for _, kv := range env {
		cfg = cfg.WithEnv(kv[0], kv[1])
	}
	m, err := h.rt.InstantiateModule(ctx, h.mod, cfg)
	if m != nil {
		_ = m.Close(ctx)
	}
	return err
}

// Env returns the CGI variables for r with the component mounted at mount:
// the ones DESIGN.md names, plus HTTP_* for each header but Authorization
// and Connection.
func Env(r *http.Request, mount string, bodyLen int) [][2]string {
	pathInfo := strings.TrimPrefix(r.URL.Path, mount)
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "80"
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	env := [][2]string{
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"REQUEST_METHOD", r.Method},
		{"SCRIPT_NAME", mount},
		{"PATH_INFO", pathInfo},
		{"QUERY_STRING", r.URL.RawQuery},
		{"CONTENT_TYPE", r.Header.Get("Content-Type")},
		{"CONTENT_LENGTH", strconv.Itoa(bodyLen)},
		{"SERVER_NAME", host},
		{"SERVER_PORT", port},
		{"SERVER_PROTOCOL", r.Proto},
		{"REMOTE_ADDR", remote},
		{"X_FULL_URL", "http://" + r.Host + r.URL.RequestURI()},
		{"X_MATCHED_ROUTE", mount + "/..."},
	}
	for k, vs := range r.Header {
		switch k {
		case "Authorization", "Connection":
			continue
		}
		env = append(env, [2]string{"HTTP_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_")), strings.Join(vs, ", ")})
	}
	if r.Host != "" {
		env = append(env, [2]string{"HTTP_HOST", r.Host})
	}
	return env
}

// Handler serves the module at mount: one fresh instance per request, with
// a 10s deadline. Its CGI handling is the minimum: header lines up to the
// first blank line, Status sets the status.
func (h *Host) Handler(mount string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var out bytes.Buffer
		args := []string{r.URL.EscapedPath()}
		if err := h.Run(ctx, Env(r, mount, len(body)), args, body, &out); err != nil {
			http.Error(w, "module failed: "+err.Error(), http.StatusBadGateway)
			return
		}
		status, respBody, err := parse(out.Bytes(), w.Header())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(respBody)))
		w.WriteHeader(status)
		_, _ = w.Write(respBody)
	})
}

// parse splits a CGI response into its headers (added to h), status and
// body.
func parse(out []byte, h http.Header) (int, []byte, error) {
	status := http.StatusOK
	for {
		nl := bytes.IndexByte(out, '\n')
		if nl < 0 {
			return 0, nil, errors.New("no blank line after the CGI headers")
		}
		line := bytes.TrimSuffix(out[:nl], []byte("\r"))
		out = out[nl+1:]
		if len(line) == 0 {
			return status, out, nil
		}
		name, value, ok := strings.Cut(string(line), ":")
		if !ok {
			return 0, nil, fmt.Errorf("bad CGI header %q", line)
		}
		value = strings.TrimSpace(value)
		if strings.EqualFold(name, "Status") {
			code, _, _ := strings.Cut(value, " ")
			n, err := strconv.Atoi(code)
			if err != nil {
				return 0, nil, fmt.Errorf("bad CGI status %q", value)
			}
			status = n
			continue
		}
		h.Add(name, value)
	}
}
