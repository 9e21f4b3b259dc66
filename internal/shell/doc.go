// Package shell is the wire protocol of `velo shell`: a command run inside a
// component's container, its terminal carried over HTTP.
//
// The client asks with an HTTP/1.1 upgrade (RFC 9110 §7.8):
//
//	POST /api/v1/components/NAME/shell?tty=1&cols=80&rows=24&term=xterm&cmd=/bin/sh HTTP/1.1
//	Connection: Upgrade
//	Upgrade: velo-shell/1
//	Authorization: Bearer TOKEN
//
// and a server that runs it answers 101 Switching Protocols with
// "Upgrade: velo-shell/1"; any other answer is an ordinary HTTP error
// (JSON {"error": …} from the API) and nothing ran. After the 101 both
// directions carry frames: one byte of kind, a 4-byte big-endian payload
// length (at most MaxPayload), the payload. The client sends Stdin, EOF and
// Resize frames; the server sends Stdout and Stderr frames (with a TTY all
// output is the terminal's, in Stdout), then exactly one Exit frame (the
// command's exit status) or Error frame (why it could not run or was cut
// off), and closes the connection. A client that goes away ends the
// session: the server closes the command's stdin and terminal.
//
// The same protocol runs on both hops — CLI to deploymgr's API, and
// deploymgr to the worker that runs the container (authenticated there by
// the cluster token) — so deploymgr relays bytes without reframing.
//
// The package holds the framing, the request's parameters (checked as
// untrusted input), the two ends of a session (Serve for the side that runs
// the command, Attach for the side with the terminal) and the HTTP upgrade
// on both sides (Dial, Upgrade). It knows nothing of Docker or of the API's
// authorization.
package shell
