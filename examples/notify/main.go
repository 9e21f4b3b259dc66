//go:build wasip1

// Command notify is a Velo WebAssembly component that does real work: it
// posts the request's body as a message to a webhook (Slack-style JSON,
// {"text": "…"}) with the key it is given as a bearer token, and says how
// the webhook answered. The webhook's URL comes from WEBHOOK_URL and the
// key from NOTIFY_TOKEN, both in its environment; Velo lets the call out
// only to the origins velo.toml's allowed_hosts lists.
//
// Build it with: GOOS=wasip1 GOARCH=wasm go build -o notify.wasm .
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Stdout, os.Stdin, os.Getenv))
}

func run(stdout io.Writer, stdin io.Reader, getenv func(string) string) int {
	url, token := getenv("WEBHOOK_URL"), getenv("NOTIFY_TOKEN")
	if url == "" || token == "" {
		return answer(stdout, 500, "notify is not configured: set WEBHOOK_URL and NOTIFY_TOKEN")
	}
	if m := getenv("REQUEST_METHOD"); m != "POST" {
		return answer(stdout, 405, "POST the message as the request body")
	}
	text, err := io.ReadAll(io.LimitReader(stdin, 4<<10))
	if err != nil {
		return answer(stdout, 400, "reading the message failed")
	}
	msg := strings.TrimSpace(string(text))
	if msg == "" {
		return answer(stdout, 400, "the message is empty")
	}
	payload, _ := json.Marshal(map[string]string{"text": msg})
	headers := "content-type:application/json\nauthorization:Bearer " + token + "\n"
	status, body, err := post(url, headers, payload)
	if err != nil {
		fmt.Fprintf(os.Stderr, "notify: webhook call: %v\n", err)
		return answer(stdout, 502, "the webhook could not be called: "+err.Error())
	}
	if status < 200 || status > 299 {
		fmt.Fprintf(os.Stderr, "notify: webhook answered %d: %.200s\n", status, body)
		return answer(stdout, 502, fmt.Sprintf("the webhook answered %d", status))
	}
	return answer(stdout, 200, fmt.Sprintf("sent (the webhook answered %d)", status))
}

func answer(w io.Writer, status int, text string) int {
	fmt.Fprintf(w, "Status: %d\nContent-Type: text/plain; charset=utf-8\n\n%s\n", status, text)
	return 0
}
