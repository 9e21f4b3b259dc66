package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/sys"

	"github.com/velo-run/velo/worker"
)

// WAGI's sub-routes and entry points (deislabs/wagi, docs/writing_modules.md):
//
//   - A module may export `_routes`. It is called once, when the deployment
//     is prepared, with nothing but stdout and stderr, and prints one route
//     per line: a path and the export that serves it ("/hello hello",
//     "/goodbye/... goodbye"). A path ending in "/..." also matches
//     everything below it; any other path matches exactly. The paths are
//     relative to where the component is mounted (/fn/NAME).
//   - A request goes to the route it matches. When several match, the one
//     declared last wins, as WAGI documents; so routes listed from general
//     to specific are tried most specific first. A request no route
//     matches goes to the module's main entry: `entrypoint` from velo.toml,
//     else _start.
//   - SCRIPT_NAME is the mount plus the route's path, PATH_INFO what
//     follows it, X_MATCHED_ROUTE the route as declared (with its "/...").
//
// An export other than _start is called in an instance whose start
// function did not run (a command's main must not), after `_initialize`
// when the module has one (a reactor, such as Go's -buildmode=c-shared).
// A _routes that traps, exits non-zero, times out or prints anything but
// routes to exported functions fails the deployment with the reason.

// Limits on what _routes may print.
const (
	maxRoutesOutput = 64 << 10
	maxRoutes       = 1000
	routesTimeout   = 10 * time.Second
)

// startEntry is the WASI command entry point, run by instantiation.
const startEntry = "_start"

// wagiRoute is one route a module declared.
type wagiRoute struct {
	declared string // as printed, e.g. "/goodbye/..."
	path     string // the exact path, or the wildcard's prefix ("" for "/...")
	wildcard bool
	entry    string
}

// match reports whether the path below the mount, sub ("" or "/…"),
// matches r, and if so the part of it after the route's path.
func (r *wagiRoute) match(sub string) (rest string, ok bool) {
	if !r.wildcard {
		return "", sub == r.path
	}
	rest, ok = strings.CutPrefix(sub, r.path)
	if !ok || rest != "" && rest[0] != '/' {
		return "", false
	}
	return rest, true
}

// target is what a request is dispatched to, with the CGI variables that
// depend only on the route and the mount, built once per mount.
type target struct {
	route      *wagiRoute // nil for the main entry
	entry      string
	scriptName string
	matched    string
}

// dispatch is an instance's routing for one mount: the sub-routes in match
// order (last declared first), then the main entry.
type dispatch struct {
	mount string
	subs  []target
	main  target
}

func newDispatch(mount, entry string, routes []wagiRoute) *dispatch {
	d := &dispatch{
		mount: mount,
		main:  target{entry: entry, scriptName: mount, matched: mount + "/..."},
	}
	for i := len(routes) - 1; i >= 0; i-- {
		r := &routes[i]
		d.subs = append(d.subs, target{route: r, entry: r.entry, scriptName: mount + r.path, matched: mount + r.declared})
	}
	return d
}

// resolve picks the target for a request whose escaped path is rawPath and
// whose decoded path is path, and returns PATH_INFO and X_RAW_PATH_INFO.
// Routes match the escaped path, as in WAGI.
func (d *dispatch) resolve(rawPath, path string) (t *target, pathInfo, rawPathInfo string) {
	rawSub := subPath(rawPath, d.mount)
	for i := range d.subs {
		if rest, ok := d.subs[i].route.match(rawSub); ok {
			info := rest
			if strings.IndexByte(rest, '%') >= 0 {
				if u, err := url.PathUnescape(rest); err == nil {
					info = u
				}
			}
			return &d.subs[i], info, rest
		}
	}
	return &d.main, subPath(path, d.mount), rawSub
}

// routesFor returns the dispatch for mount, built on first use and cached
// (one deployment is always served under the same mount).
func (in *instance) routesFor(mount string) *dispatch {
	w := in.wagi
	d := w.dispatch.Load()
	if d == nil || d.mount != mount {
		d = newDispatch(mount, w.entry, w.routes)
		w.dispatch.Store(d)
	}
	return d
}

// run runs entry in a fresh instance of the module configured by cfg,
// loading the module's code first if it was unloaded.
func (in *instance) run(ctx context.Context, entry string, call *call) error {
	c, _, err := in.mod.acquire(ctx, in.rt, in.path, nil)
	if err != nil {
		return err
	}
	defer c.unpin()
	if c.interp && !c.called.Load() && c.called.CompareAndSwap(false, true) {
		in.rt.queueNative(in.mod, in.path, true) // see tier.go
	}
	if in.warm != nil && !in.warm.off.Load() {
		return in.runWarm(ctx, c, entry, call) // warm.go
	}
	return runEntry(ctx, c, entry, in.freshConfig(call))
}

// runEntry runs entry in a fresh instance of c: _start, or _initialize
// then entry.
func runEntry(ctx context.Context, c *code, entry string, cfg wazero.ModuleConfig) error {
	rt, cm := c.rt, c.mod
	if c.stops {
		// Instantiated without running anything, so that the call is
		// armed (stop.go) before the module's code runs.
		mod, err := rt.InstantiateModule(ctx, cm, cfg.WithStartFunctions())
		if err != nil {
			if mod != nil {
				_ = mod.Close(ctx)
			}
			return err
		}
		defer mod.Close(ctx)
		w := &warm{code: c, mod: mod}
		if w.stop, err = stopGlobal(mod); err != nil {
			return err
		}
		return w.call(ctx, entry)
	}
	if entry == startEntry {
		mod, err := rt.InstantiateModule(ctx, cm, cfg)
		if mod != nil {
			_ = mod.Close(ctx)
		}
		return err
	}
	mod, err := rt.InstantiateModule(ctx, cm, cfg.WithStartFunctions("_initialize"))
	if err != nil {
		if mod != nil {
			_ = mod.Close(ctx)
		}
		return err
	}
	defer mod.Close(ctx)
	fn := mod.ExportedFunction(entry)
	if fn == nil {
		return fmt.Errorf("module exports no function %q", entry) // checked at Prepare
	}
	_, err = fn.Call(ctx)
	var exit *sys.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 0 {
		return nil // proc_exit(0) inside an export is a normal end
	}
	return err
}

// checkEntry reports why the module cannot run name as an entry point.
func checkEntry(mod wazero.CompiledModule, name string) error {
	f, ok := mod.ExportedFunctions()[name]
	if !ok {
		if name == startEntry {
			return errors.New("exports no _start function: a WAGI module is a WASI command (a program with main), or names another export as its entrypoint in velo.toml")
		}
		return fmt.Errorf("exports no function %q", name)
	}
	if len(f.ParamTypes()) != 0 {
		return fmt.Errorf("export %q takes %d parameters; an entry point takes none", name, len(f.ParamTypes()))
	}
	return nil
}

// exportsRoutes reports whether the module declares sub-routes.
func exportsRoutes(mod wazero.CompiledModule) bool {
	_, ok := mod.ExportedFunctions()["_routes"]
	return ok
}

// loadRoutes calls the module's _routes and parses what it prints. Its
// stderr goes to the build log.
func loadRoutes(ctx context.Context, c *code, timeout time.Duration, buildLog io.Writer) ([]wagiRoute, error) {
	if err := checkEntry(c.mod, "_routes"); err != nil {
		return nil, fmt.Errorf("_routes: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, routesTimeout))
	defer cancel()
	out := &boundedBuffer{max: maxRoutesOutput}
	stderr := &prefixWriter{w: buildLog, prefix: "_routes stderr: "}
	cfg := wazero.NewModuleConfig().WithName("").WithStdout(out).WithStderr(stderr) // as in WAGI: no args, no env, no files
	err := runEntry(ctx, c, "_routes", cfg)
	stderr.flush()
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("_routes: did not return within %s", min(timeout, routesTimeout))
	case out.over:
		return nil, fmt.Errorf("_routes: printed more than %d bytes", maxRoutesOutput)
	case err != nil:
		var exit *sys.ExitError
		if errors.As(err, &exit) {
			return nil, fmt.Errorf("_routes: exited with code %d", exit.ExitCode())
		}
		return nil, fmt.Errorf("_routes: %s", oneLine(err.Error()))
	}
	routes, err := parseRoutes(out.buf)
	if err != nil {
		return nil, fmt.Errorf("_routes: %w", err)
	}
	for _, r := range routes {
		if err := checkEntry(c.mod, r.entry); err != nil {
			return nil, fmt.Errorf("_routes: route %s: %w", r.declared, err)
		}
	}
	for _, w := range shadowed(routes) {
		fmt.Fprintf(buildLog, "_routes: warning: %s\n", w)
	}
	return routes, nil
}

// parseRoutes reads _routes' output as WAGI does: one "PATH EXPORT" per
// line, blank lines skipped. A path without a leading '/' gets one.
func parseRoutes(out []byte) ([]wagiRoute, error) {
	if !utf8.Valid(out) {
		return nil, errors.New("output is not UTF-8 text")
	}
	var routes []wagiRoute
	for n, line := range bytes.Split(out, []byte("\n")) {
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d %q: want a path and an export, as in \"/hello hello\"", n+1, clip(bytes.TrimSpace(line)))
		}
		p, entry := fields[0], fields[1]
		for _, c := range p {
			if c < ' ' || c == 0x7f || c == '?' || c == '#' {
				return nil, fmt.Errorf("line %d: path %q may hold no control characters, '?' or '#'", n+1, p)
			}
		}
		if len(routes) == maxRoutes {
			return nil, fmt.Errorf("more than %d routes", maxRoutes)
		}
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		r := wagiRoute{declared: p, path: p, entry: entry}
		if prefix, ok := strings.CutSuffix(p, "/..."); ok {
			r.path, r.wildcard = prefix, true
		}
		routes = append(routes, r)
	}
	if len(routes) == 0 {
		return nil, errors.New("printed no routes (a module without sub-routes does not export _routes)")
	}
	return routes, nil
}

// shadowed explains the routes no request can reach, because a route
// declared after them matches everything they do.
func shadowed(routes []wagiRoute) []string {
	var out []string
	for i, r := range routes {
		for _, later := range routes[i+1:] {
			if covers(later, r) {
				out = append(out, fmt.Sprintf("route %s %s is never used: %s %s, declared after it, matches all it does (the last matching route wins)",
					r.declared, r.entry, later.declared, later.entry))
				break
			}
		}
	}
	return out
}

// covers reports whether every path b matches, a matches too.
func covers(a, b wagiRoute) bool {
	if !a.wildcard {
		return !b.wildcard && a.path == b.path
	}
	_, ok := a.match(b.path)
	return ok
}

// prefixWriter writes whole lines to w, each with prefix and clipped, at
// most maxRoutesLogLines of them; flush writes what is left.
type prefixWriter struct {
	w      io.Writer
	prefix string
	buf    []byte
	lines  int
}

const maxRoutesLogLines = 100

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.line(p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) > 4<<10 {
		p.line(p.buf)
		p.buf = p.buf[:0]
	}
	return len(b), nil
}

func (p *prefixWriter) line(b []byte) {
	if p.lines++; p.lines <= maxRoutesLogLines {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, clip(b))
	}
}

func (p *prefixWriter) flush() {
	if len(p.buf) > 0 {
		p.line(p.buf)
		p.buf = nil
	}
}

// boundedBuffer keeps what is written up to max bytes; past that it fails
// the write and remembers it did.
type boundedBuffer struct {
	buf  []byte
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if len(b.buf)+len(p) > b.max {
		b.over = true
		return 0, errors.New("output too large")
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// wagiSetup is what Prepare resolves from the manifest and the module
// beyond plain CGI: the main entry, the sub-routes and the mounted files.
type wagiSetup struct {
	entry    string
	routes   []wagiRoute // in declaration order
	files    *filesFS    // nil without `files`
	dispatch atomic.Pointer[dispatch]
}

// prepareWAGI checks the entry point, asks the module for its routes and
// opens its files, reporting each step in the build log.
func prepareWAGI(ctx context.Context, c *code, spec worker.Spec, timeout time.Duration, buildLog io.Writer, budget *fileBudget) (*wagiSetup, error) {
	m, cm := spec.Manifest, c.mod
	w := &wagiSetup{entry: startEntry}
	if m.Entrypoint != "" {
		w.entry = m.Entrypoint
	}
	if err := checkEntry(cm, w.entry); err != nil {
		return nil, fmt.Errorf("module %s: %w", m.Module, err)
	}
	if w.entry != startEntry {
		fmt.Fprintf(buildLog, "entrypoint: %s\n", w.entry)
	}
	if exportsRoutes(cm) {
		routes, err := loadRoutes(ctx, c, timeout, buildLog)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Module, err)
		}
		w.routes = routes
		for _, r := range routes {
			fmt.Fprintf(buildLog, "route %s → %s\n", r.declared, r.entry)
		}
	}
	if len(m.Files) > 0 {
		f, err := newFilesFS(spec.Dir, m.Files, budget)
		if err != nil {
			return nil, err
		}
		w.files = f
		fmt.Fprintf(buildLog, "files: %d mounted read-only\n", len(f.files))
	}
	return w, nil
}

// attach makes in serve w's entry, routes and files.
func (in *instance) attach(w *wagiSetup) {
	in.wagi = w
	if w.files != nil {
		in.base = in.base.WithFSConfig(w.files.fsConfig())
	}
}

// close releases what w holds open.
func (w *wagiSetup) close() {
	if w != nil && w.files != nil {
		_ = w.files.close()
	}
}
