package wasm

import (
	"errors"
	"strconv"
	"strings"
)

// Why a module binary is read here at all: an instance is reused across
// requests only when putting its memory and globals back as they were
// after instantiation makes it indistinguishable from a fresh one (warm.go).
// wazero lets the embedder read and write a module's exported globals
// only, and tables not at all. So before compiling, scanModule checks
// that nothing but linear memory and globals can change in an instance —
// no instruction of the module writes a table or drops or reads a passive
// segment, it imports only functions, its mutable globals hold numbers —
// and exports every mutable global under a reserved name (globalExport),
// which lets the restore see them. The binary is untrusted input: the
// scanner reads it defensively and, on anything it does not know, says
// "not reusable", which only costs speed (the module then gets a fresh
// instance per request, as before). FuzzScanModule holds it to that.

// globalExportPrefix starts the names under which scanModule exports a
// module's mutable globals.
const globalExportPrefix = reservedPrefix + "global."

// globalExport names the export of mutable global index i.
func globalExport(i uint32) string {
	return globalExportPrefix + strconv.FormatUint(uint64(i), 10)
}

// scan is what scanModule found.
type scan struct {
	// bin is the binary to compile: the input with its mutable globals
	// exported and stop checks added, or the input itself when it is not
	// reusable.
	bin []byte
	// reusable says that restoring memory and the globals below puts an
	// instance of bin back in its pristine state.
	reusable bool
	// why says what makes it not reusable, for the logs.
	why string
	// globals are the indices of the mutable globals, each exported as
	// globalExport(index).
	globals []uint32
	// stop says that bin carries stop checks and the global they test,
	// exported as stopExport (stop.go).
	stop bool
}

// errNotReusable marks what scanModule refuses (as opposed to truncated or
// malformed input, which it refuses as well).
var errNotReusable = errors.New("not reusable")

// scanModule reads a module binary and decides whether its instances may
// be reused (see above). It never fails: a binary it cannot read is simply
// not reusable, and wazero's own validation reports what is wrong with it.
func scanModule(bin []byte) scan {
	s, err := scanSections(bin)
	if err != nil {
		return scan{bin: bin, why: err.Error()}
	}
	return s
}

// Section ids of the WebAssembly binary format.
const (
	secImport = 2
	secMemory = 5
	secGlobal = 6
	secExport = 7
	secCode   = 10
	secTag    = 13
)

func scanSections(bin []byte) (scan, error) {
	r := &reader{b: bin}
	if string(r.bytes(4)) != "\x00asm" || string(r.bytes(4)) != "\x01\x00\x00\x00" || r.err != nil {
		return scan{}, errors.New("not a WebAssembly 1.0 binary")
	}
	var globals []uint32
	var defined uint32 // globals the module defines
	type section struct {
		id               byte
		head, start, end int
	}
	var secs []section
	exportCount := uint32(0)
	exports, memory := false, false
	for r.more() {
		head := r.off
		id := r.byte()
		size := r.u32()
		start := r.off
		body := r.bytes(int(size))
		if r.err != nil {
			return scan{}, r.err
		}
		sr := &reader{b: body}
		switch id {
		case secImport:
			if err := scanImports(sr); err != nil {
				return scan{}, err
			}
		case secGlobal:
			g, n, err := scanGlobals(sr)
			if err != nil {
				return scan{}, err
			}
			globals, defined = g, n
		case secExport:
			n, err := scanExports(sr)
			if err != nil {
				return scan{}, err
			}
			exportCount, exports = n, true
		case secCode:
			if err := scanCode(sr, defined); err != nil {
				return scan{}, err
			}
		case secMemory:
			memory = sr.u32() > 0
			sr = &reader{} // not read further
		case secTag:
			return scan{}, errors.New("declares exception tags")
		}
		if sr.err == nil && sr.more() && (id == secImport || id == secGlobal || id == secExport || id == secCode) {
			// Bytes after a section's last entry: malformed, and the
			// sections rewritten below would bury them mid-section.
			return scan{}, errors.New("section " + strconv.Itoa(int(id)) + " has bytes after its entries")
		}
		secs = append(secs, section{id, head, start, start + int(size)})
	}
	if !exports {
		return scan{}, errors.New("exports nothing")
	}
	if !memory {
		return scan{}, errors.New("defines no memory") // the stop checks use it
	}
	// Written again: the global section with the stop and fuel globals
	// after the module's own (there are no imported globals, scanImports
	// refuses them), the export section with the mutable globals and the
	// stop global after the module's exports, the code section with stop
	// checks (stop.go); section sizes are LEB128s that may grow.
	stop, fuel := defined, defined+1
	out := make([]byte, 0, len(bin)+len(bin)/8+64)
	out = append(out, bin[:8]...)
	wroteGlobals := false
	for _, sc := range secs {
		old := bin[sc.start:sc.end]
		if sc.id != 0 && !wroteGlobals && sectionOrder(sc.id) > sectionOrder(secGlobal) {
			out = appendSection(out, secGlobal, appendStopGlobals(appendU32(nil, 2)))
			wroteGlobals = true
		}
		switch sc.id {
		case 0:
			if isDebugSection(old) {
				continue
			}
			out = append(out, bin[sc.head:sc.end]...)
		case secGlobal:
			sec := appendU32(nil, defined+2)
			sec = append(sec, skipU32(old)...)
			out = appendSection(out, secGlobal, appendStopGlobals(sec))
			wroteGlobals = true
		case secExport:
			sec := appendU32(nil, exportCount+uint32(len(globals))+1)
			sec = append(sec, skipU32(old)...)
			for _, g := range globals {
				sec = appendExport(sec, globalExport(g), g)
			}
			sec = appendExport(sec, stopExport, stop)
			out = appendSection(out, secExport, sec)
		case secCode:
			sec, err := stopCode(old, stop, fuel)
			if err != nil {
				return scan{}, err
			}
			out = appendSection(out, secCode, sec)
		default:
			out = append(out, bin[sc.head:sc.end]...)
		}
	}
	return scan{bin: out, reusable: true, globals: globals, stop: true}, nil
}

// skipU32 is b after the LEB128 it starts with (a section's count).
func skipU32(b []byte) []byte {
	r := &reader{b: b}
	r.u32()
	return b[r.off:]
}

func appendSection(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = appendU32(out, uint32(len(body)))
	return append(out, body...)
}

// appendStopGlobals appends the stop and fuel globals' entries: mutable
// i32s, 0 and stopFuel.
func appendStopGlobals(sec []byte) []byte {
	sec = append(sec, valI32, 0x01, 0x41, 0x00, 0x0b, valI32, 0x01, 0x41)
	return append(appendS32(sec, stopFuel), 0x0b)
}

// appendExport appends the export of global index g as name.
func appendExport(sec []byte, name string, g uint32) []byte {
	sec = appendU32(sec, uint32(len(name)))
	sec = append(sec, name...)
	sec = append(sec, 0x03) // global
	return appendU32(sec, g)
}

func scanImports(r *reader) error {
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		mod := r.name()
		r.name()
		switch kind := r.byte(); kind {
		case 0x00:
			r.u32()
		default:
			// Tables, memories, globals and tags would be state outside
			// the instance; checkWAGI refuses most anyway.
			return errors.New("imports something other than functions: " + mod)
		}
	}
	return r.err
}

// Value types a global may hold and still be restored.
const (
	valI32 = 0x7f
	valI64 = 0x7e
	valF32 = 0x7d
	valF64 = 0x7c
)

func scanGlobals(r *reader) ([]uint32, uint32, error) {
	n := r.u32()
	var mutable []uint32
	for i := uint32(0); i < n && r.err == nil; i++ {
		typ, mut := r.byte(), r.byte()
		switch mut {
		case 0:
		case 1:
			switch typ {
			case valI32, valI64, valF32, valF64:
			default:
				return nil, 0, errors.New("has a mutable global of a type that cannot be restored")
			}
			if len(mutable) >= maxRestoredGlobals {
				return nil, 0, errors.New("has more than " + strconv.Itoa(maxRestoredGlobals) + " mutable globals")
			}
			mutable = append(mutable, i)
		default:
			return nil, 0, errors.New("malformed global")
		}
		if err := scanExpr(r, i); err != nil {
			return nil, 0, err
		}
	}
	return mutable, n, r.err
}

// maxRestoredGlobals bounds the globals a reusable module may have (a C or
// Rust module has one, Go's a handful).
const maxRestoredGlobals = 64

func scanExports(r *reader) (uint32, error) {
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		if strings.HasPrefix(r.name(), reservedPrefix) {
			return 0, errors.New("already exports a name starting " + reservedPrefix)
		}
		r.byte()
		r.u32()
	}
	return n, r.err
}

func scanCode(r *reader, globals uint32) error {
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		size := r.u32()
		body := &reader{b: r.bytes(int(size))}
		if r.err != nil {
			return r.err
		}
		locals := body.u32()
		for j := uint32(0); j < locals && body.err == nil; j++ {
			body.u32()
			body.byte()
		}
		for body.more() {
			if err := scanInstr(body, globals); err != nil {
				return err
			}
		}
		if body.err != nil {
			return body.err
		}
	}
	return r.err
}

// scanExpr reads a constant expression up to its end.
func scanExpr(r *reader, globals uint32) error {
	for r.err == nil {
		if r.peek() == 0x0b {
			r.byte()
			return nil
		}
		if err := scanInstr(r, globals); err != nil {
			return err
		}
	}
	return r.err
}

// scanInstr reads one instruction, refusing those that change state
// other than linear memory and globals (tables, segments), those it does
// not know, and a global.get or global.set of an index at or beyond
// globals, the globals the module defines (it imports none): scanModule
// adds the stop and fuel globals at those indices, so a module that names
// them — invalid as written — would be valid as rewritten, and could keep
// its fuel from running out (never stopped at its deadline, and holding
// every goroutine of the process still at the next garbage collection).
func scanInstr(r *reader, globals uint32) error {
	op := r.byte()
	switch {
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b:
	case op >= 0x45 && op <= 0xc4: // numeric, sign extension
	case op == 0xd1: // ref.is_null
	case op >= 0x02 && op <= 0x04: // block, loop, if
		r.s64()
	case op == 0x0c || op == 0x0d: // br, br_if
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x10 || op == 0x12: // call, return_call
		r.u32()
	case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		n := r.u32()
		r.bytes(int(n))
	case op == 0x23 || op == 0x24: // global.get, global.set
		if r.u32() >= globals && r.err == nil {
			return errors.New("names a global it does not define")
		}
	case op >= 0x20 && op <= 0x25: // locals, table.get
		r.u32()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memarg()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.u32()
	case op == 0x41:
		r.s64()
	case op == 0x42:
		r.s64()
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op == 0xd0: // ref.null
		r.byte()
	case op == 0xd2: // ref.func
		r.u32()
	case op == 0xfc:
		switch sub := r.u32(); {
		case sub <= 7: // saturating truncations
		case sub == 10: // memory.copy
			r.u32()
			r.u32()
		case sub == 11, sub == 16: // memory.fill, table.size
			r.u32()
		default: // memory.init, data.drop, table.init, elem.drop, table.copy, table.grow, table.fill
			return errNotReusable
		}
	case op == 0xfd:
		switch sub := r.u32(); {
		case sub <= 11 || sub == 92 || sub == 93: // loads, stores
			r.memarg()
		case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
			r.bytes(16)
		case sub >= 21 && sub <= 34: // lanes
			r.byte()
		case sub >= 84 && sub <= 91: // lane loads and stores
			r.memarg()
			r.byte()
		case sub <= 0x113:
		default:
			return errNotReusable
		}
	default: // table.set, exceptions, atomics, anything newer
		if r.err == nil {
			return errors.New("uses instruction 0x" + strconv.FormatUint(uint64(op), 16))
		}
	}
	return r.err
}

// reader reads the binary format; its first failure sticks in err and
// every later read returns zero.
type reader struct {
	b   []byte
	off int
	err error
}

var errTruncated = errors.New("truncated or malformed binary")

func (r *reader) more() bool { return r.err == nil && r.off < len(r.b) }

func (r *reader) fail() {
	if r.err == nil {
		r.err = errTruncated
	}
	r.off = len(r.b)
}

func (r *reader) peek() byte {
	if r.off >= len(r.b) {
		r.fail()
		return 0
	}
	return r.b[r.off]
}

func (r *reader) byte() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.fail()
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b)-r.off {
		r.fail()
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

// u32 reads an unsigned LEB128 of at most 32 bits.
func (r *reader) u32() uint32 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 1<<32-1 {
				r.fail()
				return 0
			}
			return uint32(v)
		}
	}
	r.fail()
	return 0
}

// s64 skips a signed LEB128 of at most 64 bits.
func (r *reader) s64() {
	for i := 0; i < 10; i++ {
		if r.byte()&0x80 == 0 || r.err != nil {
			return
		}
	}
	r.fail()
}

// memarg reads a memory argument: alignment, then offset. A memory index
// (multiple memories) is refused as unknown.
func (r *reader) memarg() {
	if align := r.u32(); align&0x40 != 0 {
		r.fail()
	}
	r.u32()
}

func (r *reader) name() string {
	n := r.u32()
	return string(r.bytes(int(n)))
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
