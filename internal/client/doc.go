// Package client is a Go client for Velo's REST API (/api/v1), used by the
// velo CLI. It speaks the JSON shapes of package api and turns error answers
// into *Error values that carry the server's own message.
//
// It owns transport concerns only: building requests, mapping errors and
// parsing the Server-Sent Events log stream. It never prints, reads files or
// looks at the environment; the caller supplies the server URL and token.
package client
