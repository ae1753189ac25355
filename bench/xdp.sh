#!/usr/bin/env bash
# floe with the XDP fast path vs floe's user-space relay vs coturn, UDP over IPv4, through veth
# links between network namespaces (docs/xdp.md, docs/benchmarks.md): ChannelData (uclient's
# default) and Send/Data indications (uclient -s).
#
#   sudo bench/xdp.sh                 # ROUNDS rounds of: floe-xdp, floe-user, coturn (interleaved)
#   ROUNDS=1 USERS=2 CLIENTS=5 MSGS=200 bench/xdp.sh   # a quick check
#   MODES=send bench/xdp.sh           # Send/Data only (default: "channel send")
#
#   client ns  fxdpb<pid>-c  11.0.1.2 --- 11.0.1.1  relay ns fxdpb<pid>-r  11.0.2.1 --- 11.0.2.2  peer ns
#   (PREFIX=x names them x<pid>-c... and the links x-c0, x-r1, x-r2, x-p0 instead)
#   turnutils_uclient (USERS*CLIENTS)     floe turn / turnserver               turnutils_peer (echo)
#
# Each message goes client -> relay -> peer and its echo peer -> relay -> client: a *delivery*
# is one of those two legs (work = uclient's tot_send_msgs + tot_recv_msgs). Measured over the
# load: the server process's utime+stime (/proc/PID/stat); the load generators' (uclient,
# turnutils_peer) utime+stime; the whole machine's softirq and busy time (/proc/stat). XDP runs
# in softirq, which this kernel mostly charges to the process that was running, i.e. the
# sending load generator (veth delivers in the sender's context): so the server's process time
# alone flatters XDP, and the fair figure is server + generators + softirq, where the generators'
# own work is the same in every run. The machine busy time also holds whatever else the machine
# does meanwhile (other users): compare runs of one invocation only.
#
# The relay's own cost with XDP is measured directly: during each floe-xdp run the script turns
# on the kernel's BPF run-time statistics (sysctl kernel.bpf_stats_enabled=1, restored to its
# previous value right after the run, and on exit) and reads the program's run_time_ns and
# run_cnt from floe's program fd (/proc/PID/fdinfo). That is the program's own time, per packet
# it saw; the redirect's transmit into the egress veth happens after the program returns and
# is not in it (it is in softirq, charged to the generators).
#
# Needs root, iproute2, ethtool, coturn's tools, and a release floe built with clang
# (cargo build --release). Bounded: every run has a timeout; the namespaces and every process
# started here are removed on exit (by PID and by namespace name).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FLOE=${FLOE:-$ROOT/target/release/floe}
ROUNDS=${ROUNDS:-3}
# USERS uclient processes (one static user each, its own source IP) with CLIENTS flows each:
# floe limits allocations per user and 401 answers per source IP (RFC 8656 §21.1).
USERS=${USERS:-5}
CLIENTS=${CLIENTS:-10}
MSGS=${MSGS:-1000}
LEN=${LEN:-160}
INTERVAL=${INTERVAL:-20} # ms between messages of one flow (uclient -z): 50 flows -> 2500 msg/s
SERVERS=${SERVERS:-"floe-xdp floe-user coturn"}
MODES=${MODES:-"channel send"}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
OUT=${OUT:-$ROOT/bench/runs/xdp-$(date -u +%Y%m%dT%H%M%SZ)}
PREFIX=${PREFIX:-fxdpb}
NS=$PREFIX$$
C=$NS-c R=$NS-r P=$NS-p
L=$PREFIX # link names: $L-c0, $L-r1, $L-r2, $L-p0

for tool in ip ethtool turnserver turnutils_uclient turnutils_peer timeout awk bc; do
  command -v "$tool" >/dev/null || { echo "xdp.sh: $tool is missing" >&2; exit 1; }
done
[ -x "$FLOE" ] || { echo "xdp.sh: $FLOE missing: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"

PIDS=()
BPF_STATS_OLD=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  local p
  sysctl -q -w kernel.bpf_stats_enabled="$BPF_STATS_OLD" >/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "$C" "$R" "$P"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

for ns in "$C" "$R" "$P"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add $L-c0 netns "$C" type veth peer name $L-r1 netns "$R"
ip link add $L-p0 netns "$P" type veth peer name $L-r2 netns "$R"
ip -n "$C" addr add 11.0.1.2/24 dev $L-c0
ip -n "$R" addr add 11.0.1.1/24 dev $L-r1
ip -n "$R" addr add 11.0.2.1/24 dev $L-r2
ip -n "$P" addr add 11.0.2.2/24 dev $L-p0
for x in "$C $L-c0" "$R $L-r1" "$R $L-r2" "$P $L-p0"; do
  set -- $x
  ip -n "$1" link set "$2" up
done
ip -n "$C" route add default via 11.0.1.1
for ((i = 1; i <= USERS; i++)); do ip -n "$C" addr add "11.0.1.$((10 + i))/24" dev $L-c0; done
USER_ARGS=()
for ((i = 1; i <= USERS; i++)); do USER_ARGS+=(--user "bench$i:pass$i"); done
ip -n "$P" route add default via 11.0.2.1
# End hosts: complete UDP checksums (as from a wire) and GRO to receive redirected frames
# (docs/xdp.md, "Traps"). The relay namespace keeps IP forwarding off.
ip netns exec "$C" ethtool -K $L-c0 tx off gro on >/dev/null
ip netns exec "$P" ethtool -K $L-p0 tx off gro on >/dev/null

ip netns exec "$P" turnutils_peer -L 11.0.2.2 -p 3480 >"$OUT/peer.log" 2>&1 &
PEER_PID=$!
PIDS+=("$PEER_PID")

start_server() { # $1 server, $2 round; sets SPID
  local log=$OUT/$1-$2.log
  case $1 in
    coturn)
      ip netns exec "$R" turnserver -n --listening-ip 11.0.1.1 --listening-port 3478 \
        --relay-ip 11.0.2.1 --min-port 49152 --max-port 65535 --lt-cred-mech --realm bench \
        "${USER_ARGS[@]}" --no-tls --no-dtls --no-cli --simple-log --log-file "$log" \
        >"$log.out" 2>&1 &
      ;;
    floe-*)
      local xdp=()
      [[ $1 == floe-xdp ]] && xdp=(--xdp native --xdp-interface $L-r1 --xdp-interface $L-r2)
      ip netns exec "$R" "$FLOE" turn --listen 11.0.1.1:3478 --relay-ip 11.0.2.1 --realm bench \
        "${USER_ARGS[@]}" --max-bps 0 --user-max-bps 0 "${xdp[@]}" --log info >"$log" 2>&1 &
      ;;
  esac
  SPID=$!
  PIDS+=("$SPID")
  sleep 1
  kill -0 "$SPID" 2>/dev/null || { echo "xdp.sh: $1 did not start; see $log" >&2; exit 1; }
}

stop_server() {
  kill "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  sleep 0.5
}

proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime, clock ticks
# The XDP program's run_time_ns and run_cnt (BPF stats), from the first BPF program fd of PID $1.
bpf_stats() {
  local fd
  for fd in /proc/"$1"/fd/*; do
    if [[ $(readlink "$fd") == anon_inode:bpf-prog ]]; then
      awk '/^run_time_ns:/ {t = $2} /^run_cnt:/ {c = $2} END {print t + 0, c + 0}' "/proc/$1/fdinfo/${fd##*/}"
      return
    fi
  done
  echo 0 0
}
# /proc/stat "cpu" line: busy (user nice system irq softirq steal) and softirq, clock ticks.
sys_cpu() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $8}' /proc/stat; }
TCK=$(getconf CLK_TCK)

printf 'server\tmode\tround\tdeliveries\tlost\tproc_s\tbpf_s\tbpf_runs\tsoftirq_s\tbusy_s\twall_s\tgen_s\n' >"$OUT/results.tsv"
for ((round = 1; round <= ROUNDS; round++)); do
  for mode in $MODES; do
  MODE_ARGS=()
  [[ $mode == send ]] && MODE_ARGS=(-s)
  for server in $SERVERS; do
    start_server "$server" "$mode-$round"
    # Warm-up: one short run resolves neighbours (and, for XDP, the next hops a second later).
    ip netns exec "$C" timeout 30 turnutils_uclient -c -e 11.0.2.2 -r 3480 -u bench1 -w pass1 \
      "${MODE_ARGS[@]}" -m 1 -n 20 -l "$LEN" -z 50 -p 3478 11.0.1.1 >/dev/null 2>&1 || true
    sleep 1.5
    [[ $server == floe-xdp ]] && sysctl -q -w kernel.bpf_stats_enabled=1 >/dev/null
    read -r r0 n0 < <(bpf_stats "$SPID")
    p0=$(proc_cpu "$SPID"); read -r b0 s0 < <(sys_cpu); t0=$(date +%s.%N)
    g0=$(proc_cpu "$PEER_PID")
    upids=()
    for ((i = 1; i <= USERS; i++)); do
      # The shell prints its children's CPU (cutime+cstime: uclient, waited for by timeout)
      # as the last line: XDP's softirq work is mostly charged to the sending processes.
      ip netns exec "$C" bash -c 'timeout "$0" turnutils_uclient "${@}"; echo "children_cpu $(awk "{print \$16 + \$17}" /proc/$$/stat)"' \
        "$RUN_TIMEOUT" -c -e 11.0.2.2 -r 3480 "${MODE_ARGS[@]}" \
        -L "11.0.1.$((10 + i))" -u "bench$i" -w "pass$i" -m "$CLIENTS" -n "$MSGS" -l "$LEN" \
        -z "$INTERVAL" -p 3478 11.0.1.1 >"$OUT/uclient-$server-$mode-$round-$i.out" 2>&1 &
      upids+=($!)
    done
    for p in "${upids[@]}"; do wait "$p" || true; done
    g1=$(proc_cpu "$PEER_PID")
    gen=$(($(cat "$OUT/uclient-$server-$mode-$round-"*.out | awk '/^children_cpu / {n += $2} END {print n + 0}') + g1 - g0))
    t1=$(date +%s.%N); p1=$(proc_cpu "$SPID"); read -r b1 s1 < <(sys_cpu)
    read -r r1 n1 < <(bpf_stats "$SPID")
    sysctl -q -w kernel.bpf_stats_enabled="$BPF_STATS_OLD" >/dev/null
    if [[ $server == floe-xdp ]]; then
      grep -q 'XDP fast path attached' "$OUT/$server-$mode-$round.log" ||
        { echo "xdp.sh: floe did not attach XDP; see $OUT/$server-$mode-$round.log" >&2; exit 1; }
    fi
    stop_server
    read -r sent recv lost < <(awk '
      /start_mclient: tot_send_msgs=/ { sub(/.*tot_send_msgs=/, ""); split($0, a, /, tot_recv_msgs=/); s += a[1]; r += a[2] }
      /Total lost packets/ { sub(/.*Total lost packets /, ""); l += $1 }
      END { print s + 0, r + 0, l + 0 }' <(cat "$OUT/uclient-$server-$mode-$round-"*.out))
    printf '%s\t%s\t%s\t%s\t%s\t%.2f\t%.3f\t%s\t%.2f\t%.2f\t%.2f\t%.2f\n' "$server" "$mode" "$round" \
      $((sent + recv)) "$lost" "$(echo "($p1 - $p0) / $TCK" | bc -l)" \
      "$(echo "($r1 - $r0) / 1000000000" | bc -l)" $((n1 - n0)) "$(echo "($s1 - $s0) / $TCK" | bc -l)" \
      "$(echo "($b1 - $b0) / $TCK" | bc -l)" "$(echo "$t1 - $t0" | bc)" \
      "$(echo "$gen / $TCK" | bc -l)" >>"$OUT/results.tsv"
    tail -n 1 "$OUT/results.tsv"
  done
  done
done

echo
echo "medians, deliveries per CPU-second: relay (server process + XDP program run time); server + load generators (uclient, turnutils_peer) + machine softirq; machine busy (noisy: other users). Then the XDP program's ns per packet it ran on."
awk -F'\t' 'NR > 1 {
    k = $1 " " $2; n[k]++; i = n[k]
    p[k, i] = ($6 + $7 > 0) ? $4 / ($6 + $7) : 0
    q[k, i] = ($6 + $7 + $9 + $12 > 0) ? $4 / ($6 + $7 + $9 + $12) : 0
    b[k, i] = ($10 > 0) ? $4 / $10 : 0
    x[k, i] = ($8 > 0) ? $7 * 1e9 / $8 : 0
  }
  function med(a, s, k,   v, j, m, t) {
    for (j = 1; j <= k; j++) v[j] = a[s, j]
    for (j = 1; j <= k; j++) for (m = j + 1; m <= k; m++) if (v[m] < v[j]) { t = v[j]; v[j] = v[m]; v[m] = t }
    return v[int((k + 1) / 2)]
  }
  END { for (s in n) printf "%-17s %10.0f %10.0f %10.0f %8.0f\n", s, med(p, s, n[s]), med(q, s, n[s]), med(b, s, n[s]), med(x, s, n[s]) }' \
  "$OUT/results.tsv" | sort | tee "$OUT/summary.txt"
echo "results in $OUT"
