// Command outbound-go is the Go (GOOS=wasip1) twin of ../outbound.c (see
// there for what it does). The imports are declared with //go:wasmimport
// as wasi-experimental-http's raw bindings declare them. Rebuild with
// ../build.sh.
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"unsafe"
)

//go:wasmimport wasi_experimental_http req
func req(urlPtr unsafe.Pointer, urlLen uint32, methodPtr unsafe.Pointer, methodLen uint32,
	headersPtr unsafe.Pointer, headersLen uint32, bodyPtr unsafe.Pointer, bodyLen uint32,
	status unsafe.Pointer, handle unsafe.Pointer) uint32

//go:wasmimport wasi_experimental_http close
func closeHandle(handle uint32) uint32

//go:wasmimport wasi_experimental_http header_get
func headerGet(handle uint32, namePtr unsafe.Pointer, nameLen uint32, valuePtr unsafe.Pointer, valueLen uint32, written unsafe.Pointer) uint32

//go:wasmimport wasi_experimental_http headers_get_all
func headersGetAll(handle uint32, bufPtr unsafe.Pointer, bufLen uint32, written unsafe.Pointer) uint32

//go:wasmimport wasi_experimental_http body_read
func bodyRead(handle uint32, bufPtr unsafe.Pointer, bufLen uint32, written unsafe.Pointer) uint32

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	url := []byte(env("HTTP_X_URL", ""))
	method := []byte(env("HTTP_X_METHOD", "GET"))
	open, err := strconv.Atoi(env("HTTP_X_OPEN", "1"))
	if err != nil {
		open = 1
	}
	body, _ := io.ReadAll(os.Stdin)
	headers := "x-lang:go\ncontent-type:text/plain\n"
	if auth, ok := os.LookupEnv("HTTP_X_AUTH"); ok {
		headers += "authorization:" + auth + "\n"
	}
	hb := []byte(headers)

	out := os.Stdout
	fmt.Fprint(out, "Content-Type: text/plain\n\n")
	var status uint16
	var handle uint32
	for i := 0; i < open; i++ {
		if e := req(ptr(url), uint32(len(url)), ptr(method), uint32(len(method)), ptr(hb), uint32(len(hb)),
			ptr(body), uint32(len(body)), unsafe.Pointer(&status), unsafe.Pointer(&handle)); e != 0 {
			if open > 1 {
				fmt.Fprintf(out, "opened=%d\n", i)
			}
			fmt.Fprintf(out, "error=%d\n", e)
			return
		}
	}
	fmt.Fprintf(out, "status=%d\n", status)
	buf := make([]byte, 1<<16)
	var n uint32
	name := []byte("X-Echo")
	if e := headerGet(handle, ptr(name), uint32(len(name)), ptr(buf), uint32(len(buf)), unsafe.Pointer(&n)); e != 0 {
		fmt.Fprintf(out, "x-echo=error=%d\n", e)
	} else {
		fmt.Fprintf(out, "x-echo=%s\n", buf[:n])
	}
	if e := headersGetAll(handle, ptr(buf), uint32(len(buf)), unsafe.Pointer(&n)); e != 0 {
		fmt.Fprintf(out, "all=error=%d\n", e)
	} else {
		fmt.Fprintf(out, "all:\n%s", buf[:n])
	}
	fmt.Fprint(out, "body:\n")
	for {
		if e := bodyRead(handle, ptr(buf), 1000, unsafe.Pointer(&n)); e != 0 {
			fmt.Fprintf(out, "\nbody=error=%d\n", e)
			break
		}
		if n == 0 {
			break
		}
		out.Write(buf[:n])
	}
	closeHandle(handle)
	e := bodyRead(handle, ptr(buf), uint32(len(buf)), unsafe.Pointer(&n))
	fmt.Fprintf(out, "\nafter close=%d\n", e)
}
