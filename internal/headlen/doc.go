// Package headlen gives an answer to HEAD served through net/http the
// Content-Length its GET would have: net/http sets one only when the
// whole body fits in its first buffer (2 KiB), while Velo's event-loop
// paths count what the handler writes. It owns nothing else; the fast
// paths frame their HEAD answers themselves.
package headlen
