// Package wasm runs WebAssembly components on wazero, speaking WAGI: every
// request gets a fresh instance of the component's compiled WASI command
// module (or one put back exactly as fresh, warm.go), with the request's CGI
// variables in its environment and its body on stdin, and the module
// answers with a CGI response on stdout. Both stream
// (call.go), so what a call holds in memory is bounded by its linear memory
// cap and a constant, which the worker's admission reserves
// (Instance.CallMemory).
//
// It owns compilation (once per artifact digest, shared by every deployment
// of that digest, persisted in a disk-backed cache so a restart does not
// recompile) and the per-request sandbox: no filesystem, no network, the
// manifest's memory cap and timeout. It must not reach outside the artifact
// directory it is given, and it never returns an error from Serve: a
// misbehaving module becomes a 502 or 504 and a line in the component's logs.
package wasm
