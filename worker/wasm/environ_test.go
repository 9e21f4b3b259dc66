package wasm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// tinyModule assembles a WASI command whose _start calls
// environ_sizes_get(ptr, 4) in its one page of memory and exits with the
// errno it gets. imports names the module both functions are imported from.
func tinyModule(imports string, exportStart bool, ptr int32) []byte {
	section := func(id byte, body ...byte) []byte {
		return append([]byte{id, byte(len(body))}, body...)
	}
	name := func(s string) []byte { return append([]byte{byte(len(s))}, s...) }
	sleb := func(v int32) (out []byte) {
		for {
			b := byte(v & 0x7f)
			v >>= 7
			if v == 0 && b&0x40 == 0 || v == -1 && b&0x40 != 0 {
				return append(out, b)
			}
			out = append(out, b|0x80)
		}
	}
	var imp []byte
	imp = append(imp, 2)
	imp = append(append(append(imp, name(imports)...), name("environ_sizes_get")...), 0, 0)
	imp = append(append(append(imp, name(imports)...), name("proc_exit")...), 0, 1)

	exports := []byte{1}
	exports = append(append(exports, name("memory")...), 2, 0)
	if exportStart {
		exports[0] = 2
		exports = append(append(exports, name("_start")...), 0, 2)
	}
	code := []byte{0, 0x41}
	code = append(code, sleb(ptr)...)
	code = append(code, 0x41, 4, 0x10, 0, 0x10, 1, 0x0b)

	bin := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	bin = append(bin, section(1, 3, 0x60, 2, 0x7f, 0x7f, 1, 0x7f, 0x60, 1, 0x7f, 0, 0x60, 0, 0)...)
	bin = append(bin, section(2, imp...)...)
	bin = append(bin, section(3, 1, 2)...)
	bin = append(bin, section(5, 1, 0, 1)...)
	bin = append(bin, section(7, exports...)...)
	bin = append(bin, section(10, append([]byte{1, byte(len(code))}, code...)...)...)
	return bin
}

func prepareBytes(t *testing.T, rt *Runtime, bin []byte, logs worker.LogSink) (worker.Instance, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tiny.wasm"), bin, 0o644); err != nil {
		t.Fatal(err)
	}
	return rt.Prepare(context.Background(), worker.Spec{
		Dir: dir, Logs: logs,
		Manifest: manifest.Manifest{Module: "tiny.wasm"},
	})
}

func TestEnvironFault(t *testing.T) {
	rt := newRuntime(t, Config{})
	for _, tt := range []struct {
		ptr  int32
		want string
	}{
		{16, "invalid CGI response: no output"}, // errno 0: exits cleanly, prints nothing
		{65534, "module exited with code 21"},   // errno 21: EFAULT, the count does not fit
		{-8, "module exited with code 21"},
	} {
		logs := &sink{}
		in, err := prepareBytes(t, rt, tinyModule("wasi_snapshot_preview1", true, tt.ptr), logs)
		if err != nil {
			t.Fatal(err)
		}
		res := serve(in, "GET", "/fn/echo", nil)
		if res.StatusCode != 502 {
			t.Errorf("ptr %d: status %d", tt.ptr, res.StatusCode)
		}
		if !logs.has(worker.System, tt.want) {
			t.Errorf("ptr %d: logs %q lack %q", tt.ptr, logs.all(), tt.want)
		}
		in.Close(context.Background())
	}
}

func TestPrepareRejectsNonWAGI(t *testing.T) {
	rt := newRuntime(t, Config{})
	for _, tt := range []struct {
		name string
		bin  []byte
		want string
	}{
		{"foreign import", tinyModule("env", true, 16), "imports env.environ_sizes_get: only wasi_snapshot_preview1 and wasi_experimental_http are provided"},
		{"no _start", tinyModule("wasi_snapshot_preview1", false, 16), "exports no _start"},
	} {
		_, err := prepareBytes(t, rt, tt.bin, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "module tiny.wasm: ") {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}
