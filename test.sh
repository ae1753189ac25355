#!/usr/bin/env bash
# floe's whole test suite: installs what it needs when missing, then runs every check.
#
#   ./test.sh            everything
#   ./test.sh --no-install   fail instead of installing missing prerequisites
#
# With CI=true nothing is skipped: a missing prerequisite that cannot be installed is a failure.
set -euo pipefail
cd "$(dirname "$0")"

install=1
[ "${1:-}" = "--no-install" ] && install=0

step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
# Prerequisites: Debian packages (coturn's client tools and server for interop tests, chromium
# for browser tests, iptables/conntrack/iproute2 for the NAT lab, systemd-analyze to verify the
# unit file, clang/libbpf-dev/ethtool for the XDP fast path) and npm packages.
# ---------------------------------------------------------------------------------------------
need=()
command -v turnserver >/dev/null 2>&1 || need+=(coturn)
command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The XDP fast path (docs/xdp.md): clang builds bpf/turn_relay.c, libbpf-dev has its headers,
# ethtool sets up the veth links of its namespace test.
command -v clang >/dev/null 2>&1 || need+=(clang llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v ethtool >/dev/null 2>&1 || need+=(ethtool)
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ "$install" = 1 ] && [ "$(id -u)" = 0 ]; then
    step "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing prerequisites: ${need[*]} (run as root without --no-install to install them)" >&2
    exit 1
  fi
fi

if [ -f tests/browser/package.json ]; then
  if [ ! -d tests/browser/node_modules ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
    step "installing npm packages for the browser tests"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

# ---------------------------------------------------------------------------------------------
# Static checks
# ---------------------------------------------------------------------------------------------
# A floe built without clang has no XDP support; the suite must test it, so a missing clang is a
# build error here (crates/xdp/build.rs).
export FLOE_XDP_REQUIRE=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "sans-IO rule: protocol crates read no clock or OS randomness and use no tokio or sockets"
# Production code only: a file's unit tests start at its `#[cfg(test)]` line; comments are skipped.
# crates/peer/src/core/ is the Rust peer's sans-IO core (its shell is session.rs). Randomness is
# injected (a seed or an RNG passed in), so any OS-seeded RNG here is a violation.
violations=$(find crates/stun/src crates/turn/src crates/signal/src crates/peer/src/core -name '*.rs' -print0 |
  xargs -0 awk '/^#\[cfg\(test\)\]/ { nextfile } /^[[:space:]]*\/\// { next }
    /Instant::now|SystemTime::now|tokio|std::net::(Udp|Tcp)/ { print FILENAME ":" FNR ": " $0; next }
    /rand::random|thread_rng|OsRng|rand::rng\(\)|getrandom|from_entropy|from_os_rng/ {
      print FILENAME ":" FNR ": " $0 }')
if [ -n "$violations" ]; then
  printf '%s\n' "$violations"
  echo "a sans-IO crate reads the clock or OS randomness, or does IO (see ARCHITECTURE.md)" >&2
  exit 1
fi

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "fuzz targets compile (fuzz/ is outside the workspace; cargo-fuzz runs them on nightly)"
(cd fuzz && cargo check --bins --locked)

# ---------------------------------------------------------------------------------------------
# Tests: unit, property, corpus replay, real sockets, coturn interop (cargo); browser (node)
# ---------------------------------------------------------------------------------------------
step "cargo test"
cargo build --workspace --locked
cargo test --workspace --locked

if [ -f tests/browser/package.json ]; then
  step "browser tests (headless Chromium)"
  export FLOE_BIN="$PWD/target/debug/floe"
  (cd tests/browser && node --test --test-concurrency=1)
fi

step "all tests passed"
