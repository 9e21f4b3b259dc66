package wasm

import (
	"context"
	"encoding/binary"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Why the environment does not go through wazero.ModuleConfig.WithEnv:
// every WithEnv call copies the whole config, so setting the ~25 CGI
// variables of a request costs hundreds of map inserts and allocations, more
// than instantiating a small module. Instead each request lays its
// environment out once in a pooled buffer, passes it in the context, and
// WASI's two environment functions read it from there. Everything else in
// wasi_snapshot_preview1 is wazero's own implementation.

// WASI errno values used here (wasi_snapshot_preview1 "errno" enum).
const (
	errnoSuccess = 0
	errnoFault   = 21
)

// environKey is the context key under which Serve passes a request's
// environment to the WASI host functions.
type environKey struct{}

// environ is one request's WASI environment: NUL-terminated "NAME=value"
// entries back to back in buf, offs holding where each starts.
type environ struct {
	buf  []byte
	offs []uint32
}

func (e *environ) reset() {
	e.buf, e.offs = e.buf[:0], e.offs[:0]
}

func (e *environ) add(name, value string) {
	e.offs = append(e.offs, uint32(len(e.buf)))
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, '=')
	e.buf = append(e.buf, value...)
	e.buf = append(e.buf, 0)
}

// has reports whether name is set.
func (e *environ) has(name string) bool {
	for _, off := range e.offs {
		entry := e.buf[off:]
		if len(entry) > len(name) && string(entry[:len(name)]) == name && entry[len(name)] == '=' {
			return true
		}
	}
	return false
}

func environFrom(ctx context.Context) *environ {
	if e, ok := ctx.Value(environKey{}).(*environ); ok {
		return e
	}
	return &environ{}
}

// instantiateWASI instantiates wasi_snapshot_preview1 in r with environ_get
// and environ_sizes_get reading the request's environment from the context.
func instantiateWASI(ctx context.Context, r wazero.Runtime) error {
	b := r.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environSizesGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("result.environc", "result.environv_len").
		Export("environ_sizes_get")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("environ", "environ_buf").
		Export("environ_get")
	_, err := b.Instantiate(ctx)
	return err
}

// environSizesGet writes the number of variables and the size of their
// strings, terminators included.
func environSizesGet(ctx context.Context, mod api.Module, stack []uint64) {
	e := environFrom(ctx)
	mem := mod.Memory()
	count, size := uint32(stack[0]), uint32(stack[1])
	if !mem.WriteUint32Le(count, uint32(len(e.offs))) || !mem.WriteUint32Le(size, uint32(len(e.buf))) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

// environGet writes the strings at environBuf and a pointer to each at
// environ.
func environGet(ctx context.Context, mod api.Module, stack []uint64) {
	e := environFrom(ctx)
	mem := mod.Memory()
	ptrs, strs := uint32(stack[0]), uint32(stack[1])
	ptrBuf, ok1 := mem.Read(ptrs, uint32(4*len(e.offs)))
	strBuf, ok2 := mem.Read(strs, uint32(len(e.buf)))
	if !ok1 || !ok2 {
		stack[0] = errnoFault
		return
	}
	for i, off := range e.offs {
		binary.LittleEndian.PutUint32(ptrBuf[4*i:], strs+off)
	}
	copy(strBuf, e.buf)
	stack[0] = errnoSuccess
}
