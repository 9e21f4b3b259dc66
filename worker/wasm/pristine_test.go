package wasm

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// TestScanModule checks scanModule's verdict on the checked-in modules:
// the C and Rust ones are reusable with their stack pointer exported, and
// what it exports compiles with the same functions.
func TestScanModule(t *testing.T) {
	for _, name := range []string{"echo.wasm", "fileserver.wasm", "pristine.wasm", "routes.wasm", "routes_rs.wasm", "routes_go.wasm"} {
		bin, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		s := scanModule(bin)
		if !s.reusable {
			t.Errorf("%s: not reusable: %s", name, s.why)
			continue
		}
		if len(s.globals) == 0 {
			t.Errorf("%s: no mutable globals found; every toolchain keeps a stack pointer in one", name)
		}
		checkScanned(t, bin, s)
	}
}

// checkScanned checks that s.bin compiles when and only when bin does
// (what wazero refuses must stay refused: scanModule's additions must not
// make an invalid module valid), with bin's exports, each of s.globals
// exported and the stop global, an i32 at 0.
func checkScanned(t *testing.T, bin []byte, s scan) {
	t.Helper()
	// A fuzzed start function may loop forever: the instantiation is cut off.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().WithCloseOnContextDone(true))
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	orig, err := r.CompileModule(ctx, bin)
	if err != nil {
		if _, again := r.CompileModule(ctx, s.bin); again == nil {
			t.Fatalf("the scanned binary compiles, the input does not (%v)", err)
		}
		return // not valid: wazero says why, and nothing runs it
	}
	got, err := r.CompileModule(ctx, s.bin)
	if err != nil {
		t.Fatalf("the scanned binary does not compile: %v", err)
	}
	if a, b := exportNames(orig), exportNames(got); !slices.Equal(a, b) {
		t.Fatalf("exported functions changed: %v, then %v", a, b)
	}
	mod, err := r.InstantiateModule(ctx, got, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		return // imports other than WASI's, or a segment out of bounds
	}
	defer mod.Close(ctx)
	for _, g := range s.globals {
		if _, ok := mod.ExportedGlobal(globalExport(g)).(api.MutableGlobal); !ok {
			t.Fatalf("global %d not exported mutable", g)
		}
	}
	if g, err := stopGlobal(mod); err != nil || g.Type() != api.ValueTypeI32 || g.Get() != 0 {
		t.Fatalf("stop global: %v", err)
	}
}

func exportNames(m wazero.CompiledModule) []string {
	var names []string
	for n := range m.ExportedFunctions() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// TestScanModuleRefuses checks the modules whose instances must not be
// reused: one that changes its table, one with a passive segment it
// drops, one already using the reserved export names.
func TestScanModuleRefuses(t *testing.T) {
	hdr := "\x00asm\x01\x00\x00\x00"
	// type () -> (); one function; a table; body given.
	module := func(body string) []byte {
		return []byte(hdr +
			"\x01\x04\x01\x60\x00\x00" + // type section
			"\x03\x02\x01\x00" + // function section
			"\x04\x04\x01\x70\x00\x01" + // table section: funcref, min 1
			"\x05\x03\x01\x00\x01" + // memory section: one page
			"\x07\x08\x01\x04main\x00\x00" + // export "main"
			"\x0a" + string(rune(len(body)+2)) + "\x01" + string(rune(len(body))) + body)
	}
	ok := module("\x00\x01\x0b") // no locals, nop, end
	if s := scanModule(ok); !s.reusable {
		t.Fatalf("a module doing nothing is not reusable: %s", s.why)
	}
	for name, bin := range map[string][]byte{
		"table.set":  module("\x00\x41\x00\xd0\x70\x26\x00\x0b"),
		"table.grow": module("\x00\xd0\x70\x41\x01\xfc\x0f\x00\x1a\x0b"),
		"elem.drop":  module("\x00\xfc\x0d\x00\x0b"),
		"reserved": []byte(hdr + "\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00" +
			"\x07\x1a\x01\x14" + globalExportPrefix + "xy\x00\x00" + "\x0a\x04\x01\x02\x00\x0b"),
		"truncated": ok[:len(ok)-2],
		// The globals scanModule adds come after the module's own (here
		// none): stop at 0, fuel at 1. Invalid as written, these would be
		// valid as rewritten.
		"sets fuel":  module("\x00\x41\xe8\x07\x24\x01\x0b"),
		"reads stop": module("\x00\x23\x00\x1a\x0b"),
	} {
		if s := scanModule(bin); s.reusable {
			t.Errorf("%s: reusable", name)
		}
	}
}

// FuzzScanModule feeds scanModule arbitrary binaries, seeded with the
// checked-in modules and small hand-made ones: it never panics, leaves what
// it refuses unchanged, writes what it accepts so that it reads back, and
// (for inputs small enough to compile on every run) what it accepts
// compiles whenever the input does, with the same exports and the globals
// exported.
func FuzzScanModule(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.wasm")
	for _, p := range files {
		if bin, err := os.ReadFile(p); err == nil && len(bin) < 64<<10 {
			f.Add(bin)
		}
	}
	hdr := "\x00asm\x01\x00\x00\x00"
	f.Add([]byte(hdr + "\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00" +
		"\x06\x06\x01\x7f\x01\x41\x00\x0b" + // a mutable i32 global
		"\x07\x08\x01\x04main\x00\x00" +
		"\x0a\x0b\x01\x09\x00\x23\x00\x41\x01\x6a\x24\x00\x0b"))
	f.Add([]byte(hdr + "\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00" +
		"\x05\x03\x01\x00\x01" + // one page of memory, no globals
		"\x07\x08\x01\x04main\x00\x00" +
		"\x0a\x09\x01\x07\x00\x41\xe8\x07\x24\x01\x0b")) // sets global 1: invalid
	f.Fuzz(func(t *testing.T, bin []byte) {
		s := scanModule(bin)
		if !s.reusable {
			if !slices.Equal(s.bin, bin) {
				t.Fatal("a module not reusable was changed")
			}
			return
		}
		again := scanModule(s.bin)
		if !strings.Contains(again.why, reservedPrefix) {
			t.Fatalf("the written binary does not read back: %s", again.why)
		}
		if len(bin) <= 4<<10 {
			checkScanned(t, bin, s)
		}
	})
}
