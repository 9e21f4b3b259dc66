package wasm

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// Why the environment does not go through wazero.ModuleConfig.WithEnv:
// every WithEnv call copies the whole config, so setting the ~25 CGI
// variables of a request costs hundreds of map inserts and allocations, more
// than instantiating a small module. Instead each request lays its
// environment and arguments out once in pooled buffers, passes them in the
// context, and WASI's environment and argument functions read them from
// there, which also lets an instance serve another request with that
// request's (warm.go). Everything else in wasi_snapshot_preview1 is
// wazero's own implementation, some of it watched (instantiateWASI).

// WASI errno values used here (wasi_snapshot_preview1 "errno" enum).
const (
	errnoSuccess = 0
	errnoFault   = 21
)

// environ is one request's WASI environment: NUL-terminated "NAME=value"
// entries back to back in buf, offs holding where each starts, then those
// of rest.
type environ struct {
	buf  []byte
	offs []uint32
	// rest, when set, holds the entries that follow: a deployment's own
	// variables ([env] and secrets), laid out once when it is prepared and
	// shared by its requests, which read it straight into the module's
	// memory rather than copying it into buf first. Never written.
	rest *environ
}

func (e *environ) reset() {
	e.buf, e.offs, e.rest = e.buf[:0], e.offs[:0], nil
}

func (e *environ) add(name, value string) {
	e.offs = append(e.offs, uint32(len(e.buf)))
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, '=')
	e.buf = append(e.buf, value...)
	e.buf = append(e.buf, 0)
}

// addRaw adds s as it is (an argument).
func (e *environ) addRaw(s string) {
	e.offs = append(e.offs, uint32(len(e.buf)))
	e.buf = append(e.buf, s...)
	e.buf = append(e.buf, 0)
}

// has reports whether name is set in e's own entries (rest aside).
func (e *environ) has(name string) bool {
	for _, off := range e.offs {
		entry := e.buf[off:]
		if len(entry) > len(name) && string(entry[:len(name)]) == name && entry[len(name)] == '=' {
			return true
		}
	}
	return false
}

// wasiKey is the context key under which Serve passes a request's
// wasiState to the WASI host functions.
type wasiKey struct{}

// wasiState is what the WASI host functions keep per request: the
// environment and arguments they hand out, and the file descriptors the
// module opened and closed, by which a reused instance is known to have
// left its descriptor table as it found it (warm.go).
type wasiState struct {
	env  *environ
	args *environ // arguments, NUL-terminated like env's entries
	// opened are the descriptors path_open gave this request and the
	// module has not closed (at most maxOpened are followed).
	opened []int32
	// dirty says the module changed a descriptor it did not open in this
	// request (closed stdout or a preopen, renumbered, changed flags), or
	// opened more than maxOpened: its instance must not serve again.
	dirty bool
}

// maxOpened is the most open descriptors a request's state follows.
const maxOpened = 64

func (s *wasiState) reset() {
	s.opened = s.opened[:0]
	s.dirty = false
}

// clean reports whether the module left its descriptors as they were.
func (s *wasiState) clean() bool { return !s.dirty && len(s.opened) == 0 }

// didOpen notes a descriptor path_open returned.
func (s *wasiState) didOpen(fd int32) {
	if len(s.opened) >= maxOpened {
		s.dirty = true
		return
	}
	s.opened = append(s.opened, fd)
}

// didClose notes a descriptor closed; one the request did not open makes
// the state dirty.
func (s *wasiState) didClose(fd int32) {
	if i := slices.Index(s.opened, fd); i >= 0 {
		s.opened = slices.Delete(s.opened, i, i+1)
		return
	}
	s.dirty = true
}

// noWASIState is what a call without a wasiState sees (a module's
// _routes): no environment, no arguments. It is never written.
var noWASIState = &wasiState{env: &environ{}, args: &environ{}}

func wasiFrom(ctx context.Context) *wasiState {
	if s, ok := ctx.Value(wasiKey{}).(*wasiState); ok {
		return s
	}
	return noWASIState
}

// watched returns the request's wasiState to write to, nil without one.
func watched(ctx context.Context) *wasiState {
	s, _ := ctx.Value(wasiKey{}).(*wasiState)
	return s
}

// instantiateWASI instantiates wasi_snapshot_preview1 in r: wazero's
// functions, but the environment and arguments come from the request's
// wasiState, proc_exit stops the call without closing the instance (so
// that a reused one may serve again; a fresh one is closed by its caller
// either way), and the functions that change the descriptor table are
// watched (see wasiState).
func instantiateWASI(ctx context.Context, r wazero.Runtime) error {
	stockB := r.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(stockB)
	stock, err := stockB.Compile(ctx)
	if err != nil {
		return err
	}
	defer stock.Close(ctx)
	b := r.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	for name, def := range stock.ExportedFunctions() {
		fn, ok := def.GoFunction().(api.GoModuleFunction)
		if !ok {
			return fmt.Errorf("%s.%s: not a Go function", wasi_snapshot_preview1.ModuleName, name)
		}
		switch name {
		case "environ_sizes_get":
			fn = api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				sizesGet(wasiFrom(ctx).env, mod, stack)
			})
		case "environ_get":
			fn = api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				stringsGet(wasiFrom(ctx).env, mod, stack)
			})
		case "args_sizes_get":
			fn = api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				sizesGet(wasiFrom(ctx).args, mod, stack)
			})
		case "args_get":
			fn = api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				stringsGet(wasiFrom(ctx).args, mod, stack)
			})
		case "proc_exit":
			fn = api.GoModuleFunc(procExit)
		case "path_open":
			fn = watchOpen(fn)
		case "fd_close":
			fn = watchClose(fn)
		case "fd_renumber", "fd_fdstat_set_flags", "fd_fdstat_set_rights", "sock_accept":
			fn = watchDirty(fn)
		case "fd_readdir":
			fn = watchReaddir(fn)
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(fn, def.ParamTypes(), def.ResultTypes()).
			WithParameterNames(def.ParamNames()...).
			WithResultNames(def.ResultNames()...).
			Export(name)
	}
	_, err = b.Instantiate(ctx)
	return err
}

// procExit ends the call with the module's exit code, as wazero's does,
// but leaves closing the instance to its caller.
func procExit(_ context.Context, _ api.Module, stack []uint64) {
	// Nothing of the module runs after this (LLVM puts unreachable after
	// calls to exit): the panic unwinds the call.
	panic(sys.NewExitError(uint32(stack[0])))
}

// watchOpen notes the descriptor a successful path_open returns.
func watchOpen(fn api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		result := uint32(stack[8]) // result.opened_fd; stack[0] becomes the errno
		fn.Call(ctx, mod, stack)
		s := watched(ctx)
		if stack[0] != errnoSuccess || s == nil {
			return
		}
		if fd, ok := mod.Memory().ReadUint32Le(result); ok {
			s.didOpen(int32(fd))
		} else {
			s.dirty = true
		}
	})
}

// watchClose notes a successful fd_close.
func watchClose(fn api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		fd := int32(stack[0])
		fn.Call(ctx, mod, stack)
		if s := watched(ctx); s != nil && stack[0] == errnoSuccess {
			s.didClose(fd)
		}
	})
}

// watchDirty marks the state dirty on any call of fn.
func watchDirty(fn api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		if s := watched(ctx); s != nil {
			s.dirty = true
		}
		fn.Call(ctx, mod, stack)
	})
}

// watchReaddir marks the state dirty when a directory the request did not
// open is read: wazero keeps a listing with the descriptor.
func watchReaddir(fn api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		if s := watched(ctx); s != nil && !slices.Contains(s.opened, int32(stack[0])) {
			s.dirty = true
		}
		fn.Call(ctx, mod, stack)
	})
}

// sizes returns how many strings e holds and their size, terminators
// included, rest's counted.
func (e *environ) sizes() (count, size int) {
	count, size = len(e.offs), len(e.buf)
	if e.rest != nil {
		count, size = count+len(e.rest.offs), size+len(e.rest.buf)
	}
	return count, size
}

// sizesGet writes the number of e's strings and their size, terminators
// included (environ_sizes_get, args_sizes_get).
func sizesGet(e *environ, mod api.Module, stack []uint64) {
	mem := mod.Memory()
	count, size := e.sizes()
	if !mem.WriteUint32Le(uint32(stack[0]), uint32(count)) || !mem.WriteUint32Le(uint32(stack[1]), uint32(size)) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

// stringsGet writes e's strings at the second argument and a pointer to
// each at the first (environ_get, args_get).
func stringsGet(e *environ, mod api.Module, stack []uint64) {
	mem := mod.Memory()
	ptrs, strs := uint32(stack[0]), uint32(stack[1])
	count, size := e.sizes()
	ptrBuf, ok1 := mem.Read(ptrs, uint32(4*count))
	strBuf, ok2 := mem.Read(strs, uint32(size))
	if !ok1 || !ok2 {
		stack[0] = errnoFault
		return
	}
	putStrings(ptrBuf, strBuf, strs, e)
	if e.rest != nil {
		n := 4 * len(e.offs)
		putStrings(ptrBuf[n:], strBuf[len(e.buf):], strs+uint32(len(e.buf)), e.rest)
	}
	stack[0] = errnoSuccess
}

// putStrings copies e's own strings to strBuf, which the module sees at
// strs, and a pointer to each to ptrBuf.
func putStrings(ptrBuf, strBuf []byte, strs uint32, e *environ) {
	for i, off := range e.offs {
		binary.LittleEndian.PutUint32(ptrBuf[4*i:], strs+off)
	}
	copy(strBuf, e.buf)
}
