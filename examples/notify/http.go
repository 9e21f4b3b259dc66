//go:build wasip1

package main

import (
	"fmt"
	"unsafe"
)

// The outbound HTTP functions Velo provides (the wasi_experimental_http
// module of deislabs/wasi-experimental-http, as WAGI does). Pointers and
// lengths point into this module's memory; each returns 0 or an error
// number.

//go:wasmimport wasi_experimental_http req
func req(url unsafe.Pointer, urlLen uint32, method unsafe.Pointer, methodLen uint32,
	headers unsafe.Pointer, headersLen uint32, body unsafe.Pointer, bodyLen uint32,
	status unsafe.Pointer, handle unsafe.Pointer) uint32

//go:wasmimport wasi_experimental_http body_read
func bodyRead(handle uint32, buf unsafe.Pointer, bufLen uint32, written unsafe.Pointer) uint32

//go:wasmimport wasi_experimental_http close
func closeResponse(handle uint32) uint32

// errorNames are wasi-experimental-http's error numbers.
var errorNames = map[uint32]string{
	1: "invalid handle", 2: "memory not found", 3: "memory access error",
	4: "buffer too small", 5: "header not found", 6: "UTF-8 error",
	7: "destination not allowed (is it in allowed_hosts?)", 8: "invalid method",
	9: "invalid encoding", 10: "invalid URL", 11: "request error",
	12: "runtime error", 13: "too many sessions",
}

type httpError uint32

func (e httpError) Error() string {
	if s, ok := errorNames[uint32(e)]; ok {
		return s
	}
	return fmt.Sprintf("error %d", uint32(e))
}

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// post sends body to url and returns the answer's status and body.
func post(url, headers string, body []byte) (int, []byte, error) {
	u, m, h := []byte(url), []byte("POST"), []byte(headers)
	var status uint16
	var handle uint32
	if e := req(ptr(u), uint32(len(u)), ptr(m), uint32(len(m)), ptr(h), uint32(len(h)),
		ptr(body), uint32(len(body)), unsafe.Pointer(&status), unsafe.Pointer(&handle)); e != 0 {
		return 0, nil, httpError(e)
	}
	defer closeResponse(handle)
	var out []byte
	buf := make([]byte, 4096)
	for {
		var n uint32
		if e := bodyRead(handle, ptr(buf), uint32(len(buf)), unsafe.Pointer(&n)); e != 0 {
			return 0, nil, httpError(e)
		}
		if n == 0 {
			return int(status), out, nil
		}
		out = append(out, buf[:n]...)
	}
}
