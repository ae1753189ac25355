#!/usr/bin/env bash
# floe vs coturn on loopback, measured in server CPU-seconds (see docs/benchmarks.md).
#
#   bench/relay.sh            # everything: relay (channels, Send indications), STUN, memory
#   PARTS="relay" bench/relay.sh
#   PARTS="relay relay2relay" bench/relay.sh   # relay<->external peer next to relay<->relay
#
# For each measurement a fresh server is started (coturn's turnserver or floe turn, same
# settings), the load runs, and the server's utime+stime (/proc/PID/stat, clock ticks) over the
# load is divided into the work done. Every measurement is repeated ROUNDS times (server order
# alternating) and the median is reported. Loopback only; every loop is bounded in count and
# time; only processes started here are stopped, by PID.
#
# Parts: relay (ChannelData) and send (Send/Data indications) relay between uclient's clients
# and an external echo peer (turnutils_peer); relay2relay and send2relay (uclient -y, "client to
# client") pair uclient's clients so that each sends to the other's relayed address on the same
# server: relay<->relay, both peers relay-only. floe runs relay2relay/send2relay with its default
# peer policy (no --allow-peer: its own relayed addresses are allowed); coturn needs
# --allow-loopback-peers for both kinds on loopback.
#
# The unit of work is a *delivery*: one application message arriving at its destination.
#   relay/send:  a message client -> peer is one delivery, its echo peer -> client another
#                (work = uclient's tot_send_msgs + tot_recv_msgs). Each delivery is one datagram
#                into the server and one out of it, through one allocation.
#   relay2relay/send2relay: a message client A -> client B is one delivery (work =
#                tot_recv_msgs, i.e. messages that arrived). It passes through two allocations of
#                the server (A's and B's). coturn sends it from A's relay socket to B's over
#                loopback (two datagrams in, two out); floe hands it from A to B inside the
#                process (one in, one out).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLOE=${FLOE:-$ROOT/target/release/floe}
# Optional: a second floe binary (e.g. a build of the previous commit), measured as "floe-base"
# in the same rounds, for before/after comparisons in one session.
FLOE_BASE=${FLOE_BASE:-}
STUN_LOAD=${STUN_LOAD:-$ROOT/bench/stun-load/target/release/stun-load}
PARTS=${PARTS:-"relay send stun memory"}  # also: relay2relay send2relay
ROUNDS=${ROUNDS:-5}
# Relay load: USERS concurrent uclient processes (one static user each), CLIENTS each, so
# USERS*CLIENTS flows; MSGS messages of LEN bytes per flow, INTERVAL ms apart (uclient -z).
# Several users keep every user under floe's default per-user bandwidth quota (6.25 MB/s),
# which coturn does not have. Each uclient process binds its own source address
# (127.0.0.11, .12, ...; memory: 127.0.0.101, ...): floe rate-limits answers to unauthenticated
# requests (the 401 challenge of every Allocate) to 10/s per source IP per shard after a burst
# of 40 (RFC 8656 §21.1), which from a single IP stretches allocation setup over seconds.
USERS=${USERS:-5}
CLIENTS=${CLIENTS:-10}
MSGS=${MSGS:-4000}
LEN=${LEN:-160}
INTERVAL=${INTERVAL:-1}
# Clients per uclient process client to client (-y; pairs, so even). The default, twice CLIENTS,
# offers the server the same deliveries per second as relay/send (there every message is also
# echoed, here it is not): CPU per packet depends on the rate (batching, wake-ups), so the two
# are compared at the same delivery rate. R2R_CLIENTS=$CLIENTS gives the same number of sending
# flows instead (half the deliveries per second).
R2R_CLIENTS=${R2R_CLIENTS:-$((2 * CLIENTS))}
# STUN: Binding requests (bounded by count and seconds), sockets and in-flight window.
STUN_COUNT=${STUN_COUNT:-600000}
STUN_SOCKETS=${STUN_SOCKETS:-16}
STUN_WINDOW=${STUN_WINDOW:-16}
# Memory: allocations held (HOLD / 50 uclient processes of 25 clients, two allocations each).
HOLD=${HOLD:-500} # a multiple of 50
# Below the ephemeral range (32768-60999 by default): a busy host's outgoing connections can
# hold any port in it, and coturn and floe bind TCP on PORT too.
PORT=${PORT:-21478}
PEER_PORT=${PEER_PORT:-21480}
RELAY_MIN=${RELAY_MIN:-22000}
RELAY_MAX=${RELAY_MAX:-23999}
REALM=floe.bench
WORKERS=$(nproc)
TICK=$(getconf CLK_TCK)
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}

for tool in turnserver turnutils_uclient turnutils_peer timeout awk; do
  command -v "$tool" >/dev/null || { echo "relay.sh: $tool not found (apt-get install coturn)" >&2; exit 1; }
done
[[ -x $FLOE ]] || { echo "relay.sh: $FLOE missing: cargo build --release -p floe" >&2; exit 1; }
SERVERS="coturn floe"
if [[ -n $FLOE_BASE ]]; then
  [[ -x $FLOE_BASE ]] || { echo "relay.sh: FLOE_BASE=$FLOE_BASE is not executable" >&2; exit 1; }
  SERVERS="coturn floe floe-base"
fi
[[ -x $STUN_LOAD ]] || (cd "$ROOT/bench/stun-load" && cargo build --release -q)

mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
printf 'part\tserver\tround\tutime\tstime\twork\tsent\trecv\tlost\twall_s\textra\n' >"$RESULTS"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

users_args() { # floe --user / coturn --user for bench1..benchN
  local flag=$1 i
  for ((i = 1; i <= USERS; i++)); do printf '%s bench%d:pass%d ' "$flag" "$i" "$i"; done
}

FLOE_CONF=$OUT/floe.toml
cat >"$FLOE_CONF" <<EOF
[turn]
# coturn has no allocation quotas by default (user-quota, total-quota 0).
max_allocations = 100000
max_allocations_per_user = 100000
EOF

SPID=
start_server() { # $1: coturn|floe|floe-base, $2 log tag, $3 "default" for floe's default peer policy; sets SPID
  local log=$OUT/$1-$2.log
  local allow=(--allow-peer 127.0.0.0/8)
  [[ ${3:-} == default ]] && allow=()
  if [[ $1 == coturn ]]; then
    # shellcheck disable=SC2046
    turnserver -n --listening-ip 127.0.0.1 --listening-port "$PORT" --relay-ip 127.0.0.1 \
      --min-port "$RELAY_MIN" --max-port "$RELAY_MAX" --lt-cred-mech --realm "$REALM" \
      $(users_args --user) --allow-loopback-peers --no-tls --no-dtls --no-cli \
      --relay-threads "$WORKERS" --simple-log --log-file "$log" >"$log.out" 2>&1 &
  else
    local bin=$FLOE
    [[ $1 == floe-base ]] && bin=$FLOE_BASE
    # shellcheck disable=SC2046
    "$bin" turn -c "$FLOE_CONF" --listen "127.0.0.1:$PORT" --relay-ip 127.0.0.1 \
      --relay-ports "$RELAY_MIN-$RELAY_MAX" --realm "$REALM" $(users_args --user) \
      "${allow[@]}" --workers "$WORKERS" --log warn >"$log" 2>&1 &
  fi
  SPID=$!
  PIDS+=("$SPID")
  local i
  for ((i = 0; i < 50; i++)); do # up to 5 s for a Binding answer
    if "$STUN_LOAD" "127.0.0.1:$PORT" --count 1 --sockets 1 --window 1 --seconds 0.1 2>/dev/null |
      grep -q 'ok=1'; then
      return 0
    fi
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
  done
  echo "relay.sh: $1 did not start; see $log" >&2
  exit 1
}

stop_server() {
  kill "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  sleep 0.3
}

cpu() { awk '{print $14, $15}' "/proc/$1/stat"; } # utime stime, clock ticks (all threads)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# UDP datagrams received by every socket of this network namespace (/proc/net/snmp InDatagrams):
# other loopback traffic on the host adds to it, so it is a cross-check, not a measurement.
udp_in() { awk '$1 == "Udp:" && $2 ~ /^[0-9]+$/ {print $2}' /proc/net/snmp; }
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n + 0}'; }

# Relay: USERS uclients in parallel; echoes: turnutils_peer (relay, send) or the partner client
# (uclient -y: relay2relay, send2relay). $1 part, $2 server, $3 round, $4 extra uclient flags.
relay_run() {
  local part=$1 server=$2 round=$3 flags=$4 i c2c=0 policy= peer_args clients=$CLIENTS
  [[ $flags == *-y* ]] && c2c=1 policy=default
  peer_args="-e 127.0.0.1 -r $PEER_PORT"
  ((c2c)) && peer_args= clients=$R2R_CLIENTS
  start_server "$server" "$part-$round" "$policy"
  local before after t0 t1 cs0 cs1 udp0 udp1 pids=()
  udp0=$(udp_in)
  cs0=$(ctxsw "$SPID")
  read -r -a before < <(cpu "$SPID")
  t0=$(date +%s.%N)
  for ((i = 1; i <= USERS; i++)); do
    # shellcheck disable=SC2086
    timeout "$RUN_TIMEOUT" turnutils_uclient -L "127.0.0.$((10 + i))" -c $flags $peer_args \
      -u "bench$i" -w "pass$i" -m "$clients" -n "$MSGS" -l "$LEN" -z "$INTERVAL" \
      -p "$PORT" 127.0.0.1 >"$OUT/uclient-$part-$server-$round-$i.out" 2>&1 &
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  t1=$(date +%s.%N)
  read -r -a after < <(cpu "$SPID")
  cs1=$(ctxsw "$SPID")
  udp1=$(udp_in)
  stop_server
  local sent=0 recv=0 lost=0 s r l
  for ((i = 1; i <= USERS; i++)); do
    read -r s r l < <(awk '
      /start_mclient: tot_send_msgs=/ { sub(/.*tot_send_msgs=/, ""); split($0, a, /, tot_recv_msgs=/); s = a[1] + 0; r = a[2] + 0 }
      /Total lost packets/ { sub(/.*Total lost packets /, ""); l = $1 + 0 }
      END { print s + 0, r + 0, l + 0 }' "$OUT/uclient-$part-$server-$round-$i.out")
    sent=$((sent + s)) recv=$((recv + r)) lost=$((lost + l))
  done
  # Deliveries (see the top): with an echo peer every message sent goes client->peer and every
  # echo received peer->client; client to client (-y) a message counts once, when it arrives.
  local work=$((sent + recv))
  ((c2c)) && work=$recv
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n' "$part" "$server" "$round" \
    $((after[0] - before[0])) $((after[1] - before[1])) "$work" "$sent" "$recv" "$lost" \
    "$(echo "$t1 - $t0" | bc)" "uclient_failed=$failed,udp_in=$((udp1 - udp0)),ctxsw=$((cs1 - cs0))" >>"$RESULTS"
  tail -n 1 "$RESULTS"
}

stun_run() {
  local server=$1 round=$2
  start_server "$server" "stun-$round"
  local before after t0 t1 line cs0 cs1
  cs0=$(ctxsw "$SPID")
  read -r -a before < <(cpu "$SPID")
  t0=$(date +%s.%N)
  line=$("$STUN_LOAD" "127.0.0.1:$PORT" --count "$STUN_COUNT" --sockets "$STUN_SOCKETS" \
    --window "$STUN_WINDOW" --seconds 30)
  t1=$(date +%s.%N)
  read -r -a after < <(cpu "$SPID")
  cs1=$(ctxsw "$SPID")
  stop_server
  local sent ok
  sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$line")
  ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$line")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n' stun "$server" "$round" \
    $((after[0] - before[0])) $((after[1] - before[1])) "$ok" "$sent" "$ok" $((sent - ok)) \
    "$(echo "$t1 - $t0" | bc)" "ctxsw=$((cs1 - cs0))" >>"$RESULTS"
  tail -n 1 "$RESULTS"
}

# Memory: hold HOLD allocations (uclient -h keeps them after its last message), read VmRSS
# before and after. Also the CPU spent setting them up (Allocate with auth, permission,
# ChannelBind, one message each way).
memory_run() {
  # uclient -h makes two allocations per client (-m): HOLD / 50 uclients of 25 clients, each
  # from its own source address (see the rate-limit note at the top).
  local server=$1 round=$2 i per=25 procs=$((HOLD / 50)) pids=()
  start_server "$server" "memory-$round"
  sleep 0.5
  local rss0 rss1 before after socks0 socks t0 t1
  rss0=$(rss_kib "$SPID")
  socks0=$(find "/proc/$SPID/fd" -lname 'socket:*' 2>/dev/null | wc -l)
  read -r -a before < <(cpu "$SPID")
  t0=$(date +%s.%N)
  for ((i = 1; i <= procs; i++)); do
    local u=$(((i - 1) % USERS + 1))
    timeout 40 turnutils_uclient -L "127.0.0.$((100 + i))" -c -h -e 127.0.0.1 -r "$PEER_PORT" \
      -u "bench$u" -w "pass$u" \
      -m "$per" -n 1 -l "$LEN" -z 20 -p "$PORT" 127.0.0.1 \
      >"$OUT/uclient-memory-$server-$round-$i.out" 2>&1 &
    pids+=($!)
    PIDS+=($!)
  done
  # Wait (at most 30 s) until the server holds at least HOLD more sockets (one relay socket per
  # allocation; coturn may hold more per client) and their number stays put for a second.
  local n prev=-1 stable=0
  for ((i = 0; i < 300; i++)); do
    sleep 0.1
    n=$(($(find "/proc/$SPID/fd" -lname 'socket:*' 2>/dev/null | wc -l) - socks0))
    if ((n >= HOLD)) && ((n == prev)); then
      stable=$((stable + 1))
      ((stable >= 10)) && break
    else
      stable=0
    fi
    prev=$n
  done
  t1=$(date +%s.%N)
  read -r -a after < <(cpu "$SPID")
  rss1=$(rss_kib "$SPID")
  socks=$n
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  stop_server
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n' memory "$server" "$round" \
    $((after[0] - before[0])) $((after[1] - before[1])) "$socks" "$rss0" "$rss1" 0 \
    "$(echo "$t1 - $t0" | bc)" "sockets=$socks" >>"$RESULTS"
  tail -n 1 "$RESULTS"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "floe: $FLOE ($("$FLOE" --version 2>/dev/null || true)), sha256 $(sha256sum "$FLOE" | cut -c1-16); repo HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)"
  [[ -z $FLOE_BASE ]] || echo "floe-base: $FLOE_BASE, sha256 $(sha256sum "$FLOE_BASE" | cut -c1-16)"
  echo "coturn: $(turnserver --version 2>/dev/null | tail -n 1)"
  echo "cpus: $WORKERS ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), kernel $(uname -r), CLK_TCK $TICK"
  echo "load: users=$USERS clients=$CLIENTS r2r_clients=$R2R_CLIENTS msgs=$MSGS len=$LEN interval_ms=$INTERVAL stun_count=$STUN_COUNT hold=$HOLD rounds=$ROUNDS"
} | tee "$OUT/machine.txt"

turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >"$OUT/peer.log" 2>&1 &
PIDS+=($!)
sleep 0.3

for ((round = 1; round <= ROUNDS; round++)); do
  # Rotate the server order every round (two servers: alternate).
  read -r -a list <<<"$SERVERS"
  shift_by=$(((round - 1) % ${#list[@]}))
  order="${list[*]:shift_by} ${list[*]:0:shift_by}"
  for server in $order; do
    for part in $PARTS; do
      case $part in
        relay) relay_run relay "$server" "$round" "" ;;
        send) relay_run send "$server" "$round" "-s" ;;
        relay2relay) relay_run relay2relay "$server" "$round" "-y" ;;
        send2relay) relay_run send2relay "$server" "$round" "-y -s" ;;
        stun) stun_run "$server" "$round" ;;
        memory) memory_run "$server" "$round" ;;
      esac
    done
  done
done

# Medians over rounds and floe/coturn ratios.
awk -F'\t' -v tick="$TICK" -v hold="$HOLD" '
  NR == 1 { next }
  {
    key = $1 SUBSEP $2
    cpu = ($4 + $5) / tick
    if ($1 == "memory") {
      v = ($8 - $7) / ($6 > 0 ? $6 : 1)     # KiB per held allocation (one relay socket each)
      w = (cpu > 0) ? $6 / cpu : 0          # allocations set up per CPU-second
    } else {
      v = (cpu > 0) ? $6 / cpu : 0          # work per server CPU-second
      w = ($7 > 0) ? 100 * $9 / $7 : 0      # loss %
    }
    n[key]++; val[key, n[key]] = v; aux[key, n[key]] = w
    cs = $11; sub(/.*ctxsw=/, "", cs); csw[key, n[key]] = ($6 > 0) ? 1000 * cs / $6 : 0
    us[key] += $4; sy[key] += $5
    parts[$1] = 1
  }
  function median(k, arr,   m, i, j, t, a) {
    m = n[k]
    for (i = 1; i <= m; i++) a[i] = arr[k, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    label["relay"] = "relay<->external peer, deliveries (= relayed packets) per server CPU-second (ChannelData)"
    label["send"] = "relay<->external peer, deliveries (= relayed packets) per server CPU-second (Send/Data indications)"
    label["relay2relay"] = "relay<->relay (uclient -y), deliveries per server CPU-second (ChannelData)"
    label["send2relay"] = "relay<->relay (uclient -y), deliveries per server CPU-second (Send/Data indications)"
    label["stun"] = "Binding responses per server CPU-second"
    label["memory"] = "RSS KiB per held allocation"
    split("relay send relay2relay send2relay stun memory", order, " ")
    for (o = 1; o <= 6; o++) {
      p = order[o]
      if (!(p in parts)) continue
      c = p SUBSEP "coturn"; f = p SUBSEP "floe"
      mc = median(c, val); mf = median(f, val)
      printf "%s:\n", label[p]
      b = p SUBSEP "floe-base"
      if (b in n) {
        mb = median(b, val)
        printf "  floe-base %8.1f  floe-base/coturn %.2f   floe/floe-base %.2f\n", mb, (mc ? mb / mc : 0), (mb ? mf / mb : 0)
      }
      if (p == "memory") {
        printf "  coturn %8.1f  floe %8.1f  floe/coturn %.2f   (setup: coturn %.0f, floe %.0f allocations per CPU-second)\n", mc, mf, (mc ? mf / mc : 0), median(c, aux), median(f, aux)
      } else {
        printf "  coturn %8.0f  floe %8.0f  floe/coturn %.2f   loss%% coturn %.3f floe %.3f   user share coturn %.0f%% floe %.0f%%   context switches per 1000: coturn %.0f floe %.0f\n", mc, mf, (mc ? mf / mc : 0), median(c, aux), median(f, aux), 100 * us[c] / (us[c] + sy[c] + 1e-9), 100 * us[f] / (us[f] + sy[f] + 1e-9), median(c, csw), median(f, csw)
      }
    }
    # Relay<->relay against relay<->external on the same server: CPU per delivery, and per
    # allocation traversal (a relay<->relay delivery passes through two allocations).
    split("relay relay2relay send send2relay", pair, " ")
    for (o = 1; o <= 3; o += 2) {
      e = pair[o]; r = pair[o + 1]
      if (!((e in parts) && (r in parts))) continue
      printf "%s vs %s (same server; >1: relay<->relay cheaper per delivery):\n", r, e
      split("coturn floe floe-base", sv, " ")
      for (k = 1; k <= 3; k++) {
        if (!((e SUBSEP sv[k]) in n)) continue
        me = median(e SUBSEP sv[k], val); mr = median(r SUBSEP sv[k], val)
        printf "  %-9s per delivery %.2f   per allocation traversal %.2f\n", sv[k], (me ? mr / me : 0), (me ? 2 * mr / me : 0)
      }
    }
  }' "$RESULTS" | tee "$OUT/summary.txt"
echo "raw: $RESULTS"
