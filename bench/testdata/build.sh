#!/bin/sh
# Rebuilds hello.wasm, the benchmark's small C WAGI module, and outbound.wasm,
# its outbound HTTP module. Needs clang, lld
# and wasi-libc (Debian: apt-get install clang lld wasi-libc
# libclang-rt-14-dev-wasm32).
set -eu
cd "$(dirname "$0")"
CC=${CC:-clang}
SYSROOT=${WASI_SYSROOT:-}
if [ -z "$SYSROOT" ] && [ -d /usr/share/wasi-sysroot ]; then
	SYSROOT=/usr/share/wasi-sysroot
fi
"$CC" --target=wasm32-wasi ${SYSROOT:+--sysroot="$SYSROOT"} -O2 -Wall -Wextra \
	-Wl,--strip-all -o hello.wasm hello.c
"$CC" --target=wasm32-wasi ${SYSROOT:+--sysroot="$SYSROOT"} -O2 -Wall -Wextra \
	-Wl,--strip-all -o outbound.wasm outbound.c
