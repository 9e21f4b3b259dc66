package wasm

import (
	"context"
	"errors"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// Why a module carries its own stop checks: a call must end at its
// deadline even inside an infinite loop, machine code can only be stopped
// where it looks, and the Go runtime can only stop the world (garbage
// collection) when each goroutine reaches Go code: machine code that never
// leaves holds every goroutine of the process still. wazero's way (its
// RuntimeConfig WithCloseOnContextDone) leaves the machine code for Go at
// every loop turn to ask whether the module was closed, and starts a
// goroutine per call to close it when the context is done. For a small C
// module serving a file that was half of its request's CPU: every
// strncmp, memcpy and printf loop turn a round trip out of the machine
// code and back (BenchmarkStopChecks).
//
// So scanModule gives the modules it accepts two mutable i32 globals of
// their own, stop (exported as stopExport) and fuel, and puts at every loop
// header a countdown of fuel; once in stopFuel turns it leaves the machine
// code (memory.grow 0: a call into Go that changes nothing, where a
// pending stop of the world takes the goroutine) and traps if stop is set.
// The call's arm sets stop when the call's context is done (deadline,
// client gone, answer refused), and Serve tells a timeout from a trap by
// the context, as before. Such a module runs in a runtime that does not
// close modules on context done (runtimeKey.stops). The module cannot
// reach the globals (they are not in its index space as written) and
// wazero reloads a global at each loop header (a block with two
// predecessors); TestStopCheckCutsLoop holds wazero to both with a loop of
// nothing but a branch, and a garbage collection while it spins. Like
// wazero's checks these are at loops only: recursion without end
// overflows the stack, and growing the stack calls into Go too.
//
// A module scanModule refuses, or one without a memory, keeps wazero's
// checks, as does interpreter code (tier.go): its reads of a global are
// Go code that a Set from another goroutine would race with.

// stopFuel is how many loop turns run between two visits to Go: a tight
// loop turn takes a nanosecond or two, a visit about a hundred.
const stopFuel = 4096

// reservedPrefix starts the export names scanModule adds; a module already
// exporting one is refused.
const reservedPrefix = "velo.reuse."

// stopExport names the stop global's export.
const stopExport = reservedPrefix + "stop"

// appendStopCheck appends the check at a loop header, for the stop and
// fuel globals:
//
//	global.get fuel; i32.const 1; i32.sub; global.set fuel
//	global.get fuel; i32.eqz
//	if
//	  i32.const 0; memory.grow 0; drop
//	  global.get stop; if; unreachable; end
//	  i32.const stopFuel; global.set fuel
//	end
func appendStopCheck(b []byte, stop, fuel uint32) []byte {
	b = append(b, 0x23)
	b = appendU32(b, fuel)
	b = append(b, 0x41, 0x01, 0x6b, 0x24)
	b = appendU32(b, fuel)
	b = append(b, 0x23)
	b = appendU32(b, fuel)
	b = append(b, 0x45, 0x04, 0x40, 0x41, 0x00, 0x40, 0x00, 0x1a, 0x23)
	b = appendU32(b, stop)
	b = append(b, 0x04, 0x40, 0x00, 0x0b, 0x41)
	b = appendS32(b, stopFuel)
	b = append(b, 0x24)
	b = appendU32(b, fuel)
	return append(b, 0x0b)
}

// appendS32 appends v as a signed LEB128.
func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// stopCode is a code section's body with a stop check at each loop
// header. The section was scanned by scanCode: every instruction is known.
func stopCode(sec []byte, stop, fuel uint32) ([]byte, error) {
	r := &reader{b: sec}
	n := r.u32()
	check := appendStopCheck(nil, stop, fuel)
	out := appendU32(make([]byte, 0, len(sec)+len(sec)/4), n)
	var fn []byte
	for i := uint32(0); i < n && r.err == nil; i++ {
		size := r.u32()
		body := &reader{b: r.bytes(int(size))}
		locals := body.u32()
		for j := uint32(0); j < locals && body.err == nil; j++ {
			body.u32()
			body.byte()
		}
		fn = append(fn[:0], body.b[:body.off]...)
		for body.more() {
			start := body.off
			op := body.peek()
			if err := scanInstr(body, fuel+1); err != nil {
				return nil, err
			}
			fn = append(fn, body.b[start:body.off]...)
			if op == 0x03 { // loop blocktype
				fn = append(fn, check...)
			}
		}
		if body.err != nil {
			return nil, body.err
		}
		out = appendU32(out, uint32(len(fn)))
		out = append(out, fn...)
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

// sectionOrder is the position of a non-custom section id in a module
// (the binary format's order, which is not the ids').
func sectionOrder(id byte) int {
	switch id {
	case 13: // tags, between memories and globals
		return 6
	case 6, 7, 8, 9:
		return int(id) + 1
	case 12: // data count, before code
		return 11
	case 10, 11:
		return int(id) + 2
	}
	return int(id)
}

// isDebugSection reports whether a custom section's body is DWARF (its
// name ".debug_…"): its code offsets would be wrong once checks are put
// in, so the compiled binary goes without it.
func isDebugSection(body []byte) bool {
	r := &reader{b: body}
	return r.err == nil && strings.HasPrefix(r.name(), ".debug_")
}

// stopGlobal returns mod's stop global, or an error when the binary has
// none (it was not compiled from scanModule's output).
func stopGlobal(mod api.Module) (api.MutableGlobal, error) {
	g, ok := mod.ExportedGlobal(stopExport).(api.MutableGlobal)
	if !ok {
		return nil, errors.New("module has no stop global")
	}
	return g, nil
}

// arm sets g when ctx is done, until the returned disarm is called; disarm
// reports whether g was left alone (false: it was set, or is being set,
// and the instance must not run again).
func arm(ctx context.Context, g api.MutableGlobal) (disarm func() bool) {
	return context.AfterFunc(ctx, func() { g.Set(1) })
}
