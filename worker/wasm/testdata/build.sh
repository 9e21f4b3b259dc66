#!/bin/sh
# Rebuilds the checked-in test modules: C with clang and wasi-libc, Rust
# with Debian's rustc (no cargo, no crates), Go for wasip1. Needs
# (Debian) clang lld wasi-libc libclang-rt-14-dev-wasm32, rustc
# libstd-rust-dev-wasm32, and Go.
set -eu
cd "$(dirname "$0")"
CC=${CC:-clang}
# Debian's rustc; /root/.cargo/bin/rustc (first on PATH here) has no wasm
# target.
RUSTC=${RUSTC:-/usr/bin/rustc}
GO=${GO:-go}
SYSROOT=${WASI_SYSROOT:-}
if [ -z "$SYSROOT" ] && [ -d /usr/share/wasi-sysroot ]; then
	SYSROOT=/usr/share/wasi-sysroot
fi
cc() {
	"$CC" --target=wasm32-wasi ${SYSROOT:+--sysroot="$SYSROOT"} -O2 -Wall -Wextra \
		-Wl,--strip-all "$@"
}
cc -o echo.wasm echo.c
cc -o stream.wasm stream.c
cc -o routes.wasm routes.c
cc -o fileserver.wasm fileserver.c
cc -o pristine.wasm pristine.c
for mode in 1 2 3 4 5 6; do
	cc -DMODE=$mode -o badroutes$mode.wasm badroutes.c
done
"$RUSTC" --target wasm32-wasi -O -C strip=symbols -o routes_rs.wasm routes.rs
"$RUSTC" --target wasm32-wasi -O -C strip=symbols -o pristine_rs.wasm pristine.rs
(cd gowagi && GOOS=wasip1 GOARCH=wasm "$GO" build -buildmode=c-shared -trimpath \
	-ldflags='-s -w' -o ../routes_go.wasm .)
cc -o outbound-c.wasm outbound.c
"$RUSTC" --target wasm32-wasi -O -C strip=symbols -o outbound-rust.wasm outbound.rs
(cd outbound-go && GOOS=wasip1 GOARCH=wasm "$GO" build -trimpath \
	-ldflags='-s -w' -o ../outbound-go.wasm .)
