// Package testmods holds WAGI modules that tests of several packages deploy,
// built from the C source in src/ (the rebuild line is in its header).
package testmods

import _ "embed"

// Flaky answers 503 to a queued call until its attempt reaches ?ok=N; a
// direct call gets 200; /sleep?ms=N spins first (src/flaky.c).
//
//go:embed flaky.wasm
var Flaky []byte
