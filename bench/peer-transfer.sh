#!/usr/bin/env bash
# File-transfer throughput of `floe peer` on loopback: direct (host candidates) and relay-only
# through floe's TURN over UDP, TCP and TLS (bandwidth caps off). A benchmark, not a test.
#
#   bench/peer-transfer.sh [SIZE_MB]      (default 50; builds the release binary first)
#
# Prints one line per mode: MiB/s as measured by the sender from the first byte to the
# receiver's checksum acknowledgement, and the selected pair.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mb=${1:-50}
cargo build --release -q -p floe
floe=$PWD/target/release/floe
work=$(mktemp -d)
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
head -c $((size_mb * 1024 * 1024)) /dev/urandom > "$work/data.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
port=$((20000 + RANDOM % 20000))
"$floe" serve --listen 127.0.0.1:$port --tls-listen 127.0.0.1:$((port + 2)) --tls-cert "$work/cert.pem" \
  --tls-key "$work/key.pem" --http 127.0.0.1:$((port + 3)) --allow-peer 127.0.0.0/8 \
  --max-bps 0 --user-max-bps 0 > "$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 50); do grep -q "listening on http" "$work/serve.log" && break; sleep 0.1; done
signal=http://127.0.0.1:$((port + 3))
for mode in direct relay-udp relay-tcp relay-tls; do
  case $mode in
    direct) extra=() ;;
    *) extra=(--relay-only --turn-transport "${mode#relay-}") ;;
  esac
  common=(--room "bench-$mode" --signal "$signal" --ca-file "$work/cert.pem" --timeout 30 "${extra[@]}")
  timeout 300 "$floe" peer receive --out "$work/out-$mode.bin" "${common[@]}" > "$work/r.out" 2> "$work/r.err" &
  recv=$!
  timeout 300 "$floe" peer send "$work/data.bin" "${common[@]}" > "$work/s.out" 2> "$work/s.err"
  wait "$recv"
  cmp -s "$work/data.bin" "$work/out-$mode.bin" || { echo "$mode: received file differs" >&2; exit 1; }
  rate=$(grep -o '[0-9.]* MiB/s' "$work/s.err")
  printf '%-10s %10s   %s\n' "$mode" "$rate" "$(grep 'selected pair' "$work/s.out")"
  rm -f "$work/out-$mode.bin"
done
