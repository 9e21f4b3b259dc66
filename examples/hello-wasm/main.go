//go:build wasip1

// Command hello is the smallest Velo WebAssembly component: a WAGI program.
// Velo runs it once per request with the request in its environment (CGI
// variables) and its body on stdin; what it prints to stdout is the
// response, headers first, then a blank line, then the body.
//
// Build it with: GOOS=wasip1 GOARCH=wasm go build -o hello.wasm .
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Stdout, os.Stdin, os.Getenv))
}

// run writes the response for the request described by getenv and body.
func run(stdout io.Writer, body io.Reader, getenv func(string) string) int {
	greeting := getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	path := getenv("PATH_INFO")
	if path == "" {
		path = "/"
	}
	n, err := io.Copy(io.Discard, body)
	if err != nil {
		fmt.Fprintf(os.Stderr, "read body: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Content-Type: text/plain; charset=utf-8\n\n")
	fmt.Fprintf(stdout, "%s from Velo! method=%s path=%s", greeting, getenv("REQUEST_METHOD"), path)
	if q := getenv("QUERY_STRING"); q != "" {
		fmt.Fprintf(stdout, " query=%s", q)
	}
	if n > 0 {
		fmt.Fprintf(stdout, " body=%d bytes", n)
	}
	fmt.Fprintln(stdout)
	return 0
}
