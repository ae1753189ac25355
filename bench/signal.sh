#!/usr/bin/env bash
# floe signal vs PeerJS server on loopback, in one run: RSS per idle WebSocket and server
# CPU-seconds per 100k directed messages (docs/benchmarks.md, "Signalling").
#
#   bench/signal.sh [IDLE_CONNS] [MSG_PAIRS] [MSGS] [RATE]     defaults: 10000 500 100000 10000
#
# Needs: a release floe (cargo build --release -p floe), node + npm (PeerJS server 1.0.2 is
# installed from bench/peerjs/package.json on first use). Every load is bounded (count and a
# timeout); servers are stopped by PID. Both servers have their abuse limits raised where one
# client address would hit them: floe --joins-per-min-per-ip, --max-ws-connections,
# --max-connections and --max-connections-per-ip, PeerJS
# --concurrent_limit. The open-files limit (ulimit -n) caps IDLE_CONNS a little below it.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${1:-10000}
PAIRS=${2:-500}
MSGS=${3:-100000}
RATE=${4:-10000}
FLOE=${FLOE:-target/release/floe}
LOAD=bench/signal-load/target/release/signal-load
[ -x "$FLOE" ] || { echo "build floe first: cargo build --release -p floe" >&2; exit 1; }
(cd bench/signal-load && cargo build --release --offline -q)
[ -d bench/peerjs/node_modules/peer ] || (cd bench/peerjs && npm ci --no-audit --no-fund)
TMP=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

start_floe() {
  "$FLOE" signal --http 127.0.0.1:0 --log warn \
    --joins-per-min-per-ip 1000000 --max-ws-connections 20000 \
    --max-connections 20000 --max-connections-per-ip 20000 >"$TMP/floe.out" 2>"$TMP/floe.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    ADDR=$(sed -n 's#^floe signal: listening on http://##p' "$TMP/floe.out")
    [ -n "$ADDR" ] && return; sleep 0.1
  done
  echo "floe did not start" >&2; exit 1
}
start_peerjs() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  node bench/peerjs/node_modules/peer/dist/bin/peerjs.js --host 127.0.0.1 --port "$port" \
    --concurrent_limit 20000 >"$TMP/peerjs.out" 2>&1 &
  SERVER_PID=$!
  ADDR=127.0.0.1:$port
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1
  done
  echo "PeerJS server did not start" >&2; exit 1
}
stop() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }
run() { # proto mode args...
  local proto=$1; shift
  if [ "$proto" = floe ]; then start_floe; else start_peerjs; fi
  timeout 600 "$LOAD" "$@" --url "ws://$ADDR" --proto "$proto" --pid "$SERVER_PID"
  stop
}

echo "# $(date -u +%FT%TZ) floe $(git rev-parse --short HEAD) vs PeerJS server $(node -p 'require("./bench/peerjs/node_modules/peer/package.json").version')"
for proto in floe peerjs; do run $proto idle --conns "$IDLE" --hold 10; done
for size in 300 3000; do
  for proto in floe peerjs; do
    run $proto msgs --pairs "$PAIRS" --msgs "$MSGS" --rate "$RATE" --size "$size"
  done
done
