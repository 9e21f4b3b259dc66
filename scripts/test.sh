#!/usr/bin/env bash
# Runs Velo's whole test suite on a fresh machine with Go: installs what the
# tests need (PostgreSQL, Chromium, clang for wasm32-wasi, debootstrap for
# the Debian test hosts) from Debian's packages when missing, checks the
# Docker engine, then vets and tests every package.
#
# With CI=true a missing dependency fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || need+=(chromium)
# examples/notify is built by its test as its velo.toml says: clang for wasm32-wasi.
command -v clang >/dev/null || need+=(clang)
[ -e /usr/include/wasm32-wasi/stdio.h ] || need+=(wasi-libc)
compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/wasi' >/dev/null || need+=(libclang-rt-14-dev-wasm32)
command -v wasm-ld >/dev/null || compgen -G '/usr/bin/wasm-ld*' >/dev/null || need+=(lld)
# internal/debiantest builds the Debian hosts of the install and compose tests.
command -v debootstrap >/dev/null || need+=(debootstrap)
# internal/install runs the velo it cross-compiles for arm64 under qemu.
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if ((${#need[@]})); then
  say "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if [ "${CI:-}" = true ]; then
    echo "Docker engine not reachable (docker info failed): the Docker tests need one" >&2
    exit 1
  fi
  say "Docker engine not reachable: Docker tests will be skipped (they fail under CI=true)"
fi

say "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

say "go vet"
go vet ./...

say "go test"
# -race everywhere: the router, worker, store and runtimes are concurrent.
go test -race -count=1 -timeout 20m ./... "$@"

say "fuzz"
# Each differential fuzz target of the router's HTTP parsers for a fixed
# short time (the corpus in router/testdata/fuzz runs with go test above).
for target in FuzzRequestHead FuzzAnswerHead; do
  go test -run '^$' -fuzz "^${target}\$" -fuzztime 15s ./router
done
# And the module scanner that decides whether a WASM instance may be
# reused (it rewrites untrusted binaries; worker/wasm/pristine.go).
go test -run '^$' -fuzz '^FuzzScanModule$' -fuzztime 15s ./worker/wasm
