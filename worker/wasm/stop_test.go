package wasm

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
)

// spinModule is a WAGI module whose _start is a loop of nothing but a
// branch back to its header, (func loop br 0 end): no memory access, no
// call, nothing but the stop check to notice a deadline.
func spinModule() []byte {
	body := "\x00\x03\x40\x0c\x00\x0b\x0b" // no locals; loop; br 0; end; end
	return []byte("\x00asm\x01\x00\x00\x00" +
		"\x01\x04\x01\x60\x00\x00" + // type section: () -> ()
		"\x03\x02\x01\x00" + // function section: one of type 0
		"\x05\x03\x01\x00\x01" + // memory section: one page
		"\x07\x0a\x01\x06_start\x00\x00" + // export _start
		"\x0a" + string(rune(len(body)+2)) + "\x01" + string(rune(len(body))) + body)
}

// TestStopCheckCutsLoop runs a module that spins without touching memory
// or calling anything, in reused and in fresh instances: each call must be
// cut at its timeout (504), which only the stop checks can do (their
// runtime does not close modules on context done), and a garbage
// collection started while it spins must finish (the checks visit Go).
func TestStopCheckCutsLoop(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fresh bool
	}{{"reused", false}, {"fresh", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if s := scanModule(spinModule()); !s.stop {
				t.Fatalf("no stop checks: %s", s.why)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "spin.wasm"), spinModule(), 0o644); err != nil {
				t.Fatal(err)
			}
			logs := &sink{}
			rt := newRuntime(t, Config{})
			spec := moduleSpec("echo", dir, "spin.wasm", logs)
			spec.Manifest.Timeout = 200 * time.Millisecond
			in, err := rt.Prepare(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = in.Close(ctx)
			})
			if p := in.(*instance).warm; tc.fresh && p != nil {
				p.off.Store(true)
			}
			for i := range 2 {
				done := make(chan *http.Response, 1)
				go func() { done <- serve(in, "GET", "/fn/echo", nil) }()
				if i == 1 {
					// A collection stops the world, which machine code
					// that never calls into Go would hold up for ever.
					testsupport.Eventually(t, 30*time.Second, "the loop to run", func() bool { return in.(*instance).inflight.Load() == 1 })
					gc := make(chan struct{})
					go func() { runtime.GC(); close(gc) }()
					select {
					case <-gc:
					case <-time.After(30 * time.Second):
						t.Fatal("a garbage collection did not finish while the loop ran")
					}
				}
				select {
				case res := <-done:
					if res.StatusCode != http.StatusGatewayTimeout {
						t.Fatalf("request %d: status %d, want 504", i, res.StatusCode)
					}
				case <-time.After(30 * time.Second):
					t.Fatalf("request %d: not cut off at its 200ms timeout", i)
				}
			}
			if !logs.has(worker.System, "GET /fn/echo: timed out after 200ms") {
				t.Errorf("logs lack the timeout: %q", logs.all())
			}
		})
	}
}
