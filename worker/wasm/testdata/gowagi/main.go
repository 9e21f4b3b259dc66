// Command gowagi is a WAGI test module in Go, built as a WASI reactor
// (GOOS=wasip1 -buildmode=c-shared): it has no _start, so its manifest
// names `serve` as its entrypoint, and it declares sub-routes with
// go:wasmexport functions. Rebuild with ../build.sh.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

func main() {}

//go:wasmexport _routes
func routes() {
	fmt.Println("/hello/... hello")
	fmt.Println("/files files")
}

//go:wasmexport serve
func serve() { answer("serve from Go") }

//go:wasmexport hello
func hello() { answer("hello from Go") }

// files lists / and reads a template, the way a Go module renders pages.
//
//go:wasmexport files
func files() {
	var b strings.Builder
	b.WriteString("Content-Type: text/plain\n\n")
	entries, err := os.ReadDir("/")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "/: %s (err %v)\n", strings.Join(names, " "), err)
	page, err := os.ReadFile("/templates/page.html")
	fmt.Fprintf(&b, "page.html: %s (err %v)\n", strings.TrimSpace(string(page)), err)
	_, err = os.ReadFile("/secret.txt")
	fmt.Fprintf(&b, "secret.txt: %v\n", os.IsNotExist(err))
	err = os.WriteFile("/static/new.txt", []byte("x"), 0o644)
	fmt.Fprintf(&b, "write: %v\n", err != nil)
	os.Stdout.WriteString(b.String())
}

func answer(what string) {
	fmt.Printf("Content-Type: text/plain\n\n%s\n", what)
	for _, k := range []string{"SCRIPT_NAME", "PATH_INFO", "X_MATCHED_ROUTE"} {
		fmt.Printf("%s=%s\n", k, os.Getenv(k))
	}
}
