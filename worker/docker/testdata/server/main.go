// Command server is the component the docker runtime tests run: a static
// HTTP server built FROM scratch that reports on its own sandbox.
package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if os.Getenv("EXIT_AT_START") != "" {
		fmt.Fprintln(os.Stderr, "fatal: bad config")
		os.Exit(1)
	}
	if os.Getenv("NOLISTEN") != "" {
		fmt.Println("booting forever")
		for {
			time.Sleep(time.Hour)
		}
	}
	started := time.Now()
	readyAfter, _ := time.ParseDuration(os.Getenv("HEALTHY_AFTER"))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		// 503 while warming up (HEALTHY_AFTER), 500 for good with UNHEALTHY.
		switch {
		case os.Getenv("UNHEALTHY") != "":
			http.Error(w, "unhealthy: "+os.Getenv("UNHEALTHY"), 500)
		case time.Since(started) < readyAfter:
			http.Error(w, "warming up", 503)
		default:
			fmt.Fprintln(w, "healthy")
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", os.Getenv("GREETING"))
	})
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s query=%s host=%s xff=%q xfp=%q", r.URL.Path, r.URL.RawQuery, r.Host,
			r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "PORT=%s GREETING=%s", os.Getenv("PORT"), os.Getenv("GREETING"))
	})
	mux.HandleFunc("/getenv", func(w http.ResponseWriter, r *http.Request) {
		// ?name=X answers X's value; &print=1 also prints it to stdout.
		v, ok := os.LookupEnv(r.URL.Query().Get("name"))
		if !ok {
			v = "(unset)"
		}
		if r.URL.Query().Get("print") != "" {
			fmt.Printf("%s is %s\n", r.URL.Query().Get("name"), v)
		}
		fmt.Fprint(w, v)
	})
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, r *http.Request) {
		h, _ := os.Hostname()
		fmt.Fprint(w, h)
	})
	mux.HandleFunc("/caps", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open("/proc/self/status")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "CapEff:") || strings.HasPrefix(s.Text(), "NoNewPrivs:") {
				fmt.Fprintln(w, s.Text())
			}
		}
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Query().Get("path")
		if path == "" {
			path = "/velo-test"
		}
		if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
			fmt.Fprintf(w, "error: %v", err)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(os.Stderr, "crashing on request")
		os.Exit(1)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		fmt.Fprintf(w, "slept %s", d)
	})
	mux.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		msg := r.URL.Query().Get("msg")
		fmt.Println("stdout " + msg)
		fmt.Fprintln(os.Stderr, "stderr "+msg)
		fmt.Fprint(w, "logged")
	})
	addr := ":" + os.Getenv("PORT")
	fmt.Println("listening on", addr)
	if err := http.ListenAndServe(addr, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
