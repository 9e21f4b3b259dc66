// Command sh is the shell of the docker runtime's test image: a tiny static
// stand-in for /bin/sh (the images are built FROM scratch, without one)
// that reports on the terminal it runs in, for the tests of velo shell.
//
//	sh                 read commands from stdin, one a line ("$ " prompt on a terminal)
//	sh -c 'LINE'       run one line
//
// Commands: echo ARG…, echoerr ARG… (to stderr), exit [N], tty (is stdin a
// terminal), size (the terminal's rows and columns), env NAME, id, caps
// (CapEff and NoNewPrivs of the process), cat (stdin to stdout), write
// PATH. Anything else is "not found", status 127.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-c" {
		os.Exit(run(strings.Fields(os.Args[2])))
	}
	_, err := unix.IoctlGetTermios(0, unix.TCGETS)
	interactive := err == nil
	in := bufio.NewReader(os.Stdin)
	status := 0
	for {
		if interactive {
			fmt.Print("$ ")
		}
		line, err := in.ReadString('\n')
		if f := strings.Fields(line); len(f) > 0 {
			if f[0] == "exit" {
				if len(f) > 1 {
					status, _ = strconv.Atoi(f[1])
				}
				os.Exit(status)
			}
			status = run(f)
		}
		if err != nil {
			os.Exit(status)
		}
	}
}

func run(f []string) int {
	if len(f) == 0 {
		return 0
	}
	switch f[0] {
	case "echo":
		fmt.Println(strings.Join(f[1:], " "))
	case "echoerr":
		fmt.Fprintln(os.Stderr, strings.Join(f[1:], " "))
	case "exit":
		n := 0
		if len(f) > 1 {
			n, _ = strconv.Atoi(f[1])
		}
		os.Exit(n)
	case "tty":
		if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err != nil {
			fmt.Println("not a tty")
			return 1
		}
		fmt.Println("tty: yes")
	case "size":
		ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
		if err != nil {
			fmt.Println("size:", err)
			return 1
		}
		fmt.Printf("size %d rows %d cols\n", ws.Row, ws.Col)
	case "env":
		if len(f) < 2 {
			return 2
		}
		fmt.Printf("%s=%s\n", f[1], os.Getenv(f[1]))
	case "id":
		fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	case "caps":
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			fmt.Println("caps:", err)
			return 1
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(l, "CapEff:") || strings.HasPrefix(l, "NoNewPrivs:") {
				fmt.Println(strings.Join(strings.Fields(l), " "))
			}
		}
	case "cat":
		if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
			return 1
		}
	case "write":
		if len(f) < 2 {
			return 2
		}
		if err := os.WriteFile(f[1], []byte("x"), 0o644); err != nil {
			fmt.Println("write:", err)
			return 1
		}
		fmt.Println("written")
	default:
		fmt.Fprintf(os.Stderr, "sh: %s: not found\n", f[0])
		return 127
	}
	return 0
}
