package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Bench is what every section gets: the run's settings, a scratch
// directory and helpers to build and run the processes under test.
type Bench struct {
	// Duration is the length of each load run.
	Duration time.Duration
	// Rounds is how often each measurement is repeated.
	Rounds int
	// Root is the repository root (the directory holding go.mod).
	Root string
	// Tmp is a scratch directory removed at the end.
	Tmp string
	// Baseline is a checkout of an older commit whose velo the wasmlimits
	// section measures against (-wasm-baseline); "" skips that part.
	// Candidate is the checkout measured against it (-wasm-candidate);
	// "" means this one.
	Baseline, Candidate string
	// ScaleComponents is how many components the scale section deploys.
	ScaleComponents int
	// ScaleSkipChurn leaves out the scale section's churn part.
	ScaleSkipChurn bool
	// ScaleChurn is how many times the churn part deploys its component.
	ScaleChurn int
	// ScaleOnlyChurn leaves out everything of the scale section but churn.
	ScaleOnlyChurn bool

	log     io.Writer
	started time.Time
	load    string // /proc/loadavg at start

	mu     sync.Mutex
	builds map[string]string // package → binary
	tables []*table          // of the section being run (newTable)
}

func newBench(d time.Duration, rounds int, log io.Writer) (*Bench, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "velo-bench-")
	if err != nil {
		return nil, err
	}
	load, _ := os.ReadFile("/proc/loadavg")
	return &Bench{
		Duration: d, Rounds: rounds, Root: root, Tmp: tmp,
		log: log, started: time.Now(), load: strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "),
		builds: map[string]string{},
	}, nil
}

func (b *Bench) close(keep bool) {
	if keep {
		b.logf("scratch directory kept: %s", b.Tmp)
		return
	}
	_ = os.RemoveAll(b.Tmp)
}

// logf reports progress on stderr.
func (b *Bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Machine describes where the numbers come from, for each section's text.
func (b *Bench) Machine() string {
	return fmt.Sprintf("%d × %s, %s, load average at start %s", runtime.NumCPU(), cpuModel(), runtime.Version(), b.load)
}

func (b *Bench) header() string {
	return fmt.Sprintf("Last run: %s · `go run ./bench %s`\n\nMachine: %d CPUs (nproc), %s, %s, %s/%s. Load average at start: %s.",
		b.started.UTC().Format("2006-01-02 15:04 MST"), strings.Join(os.Args[1:], " "),
		runtime.NumCPU(), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH, b.load)
}

// Stamp is the line each section starts its method text with.
func (b *Bench) Stamp() string {
	return fmt.Sprintf("Measured %s on %s.", time.Now().UTC().Format("2006-01-02 15:04 MST"), b.Machine())
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the velo repository: no go.mod found above the working directory")
		}
		dir = parent
	}
}

// GoBuild builds the main package pkg (like "./cmd/velo") once per run and
// returns the binary's path. Every server binary is built the same way, so
// Velo and its peers get the same compiler treatment.
func (b *Bench) GoBuild(ctx context.Context, pkg string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bin, ok := b.builds[pkg]; ok {
		return bin, nil
	}
	bin := filepath.Join(b.Tmp, "bin", filepath.Base(pkg))
	// The checkout is shared with people editing it: a build broken by a
	// half-saved file is tried again for a while before giving up.
	for attempt := 1; ; attempt++ {
		b.logf("building %s", pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		cmd.Dir = b.Root
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 8 || ctx.Err() != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
		b.logf("go build %s failed, retrying in 15s: %s", pkg, firstLine(string(out)))
		select {
		case <-ctx.Done():
		case <-time.After(15 * time.Second):
		}
	}
	b.builds[pkg] = bin
	return bin, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Proc is a server process started by the benchmark.
type Proc struct {
	Name string
	URL  string // from the first line matching the start prefix
	Log  string // file holding its stderr (and stdout after the URL)
	cmd  *exec.Cmd
	done chan struct{}
}

// StartProc runs bin with args and waits (up to 60s) for a stdout line
// containing urlPrefix followed by a URL, like "listening on http://…".
// VELO_* variables are not passed on, so that a developer's settings do not
// leak in; env adds others.
func (b *Bench) StartProc(ctx context.Context, name, bin string, args, env []string, urlPrefix string) (*Proc, error) {
	logPath := filepath.Join(b.Tmp, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VELO_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if i := strings.Index(line, urlPrefix); i >= 0 && !found {
				found = true
				u, _, _ := strings.Cut(line[i+len(urlPrefix):], " ")
				urlc <- u
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	select {
	case p.URL = <-urlc:
		b.logf("%s up at %s (pid %d)", name, p.URL, cmd.Process.Pid)
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before listening; see its log:\n%s", name, tail(logPath))
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	p.Stop()
	return nil, fmt.Errorf("%s did not print %q within 60s", name, urlPrefix)
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stop interrupts the process and waits up to 20s for it to exit, then
// kills it.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// CPUTime is the user+system CPU time the process has used so far.
func (p *Proc) CPUTime() time.Duration { return cpuTime(p.Pid()) }

// cpuTime is the user+system CPU time process pid has used so far (0 when
// it cannot be read).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields of the whole line.
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
