#!/usr/bin/env bash
# `-f 0` with different --sync-threads: per run (a fresh yaad mapped -f 0 server, 1 s warm-up),
# cycles/s, cycle latency p50/p99 µs, server CPU µs per cycle, and from `stats` the syncs, changes
# per sync and µs per sync of the measured run and warm-up together.
#
# Usage: bench/syncthreads.sh [N...]      (default: 1 2 4; rounds interleave the variants)
# Environment: ROUNDS [5], DURATION s [3], CONNS ["10 50"], F (the -f value) [0], MODE [mapped],
#   PORT [11390], YAAD [target/release/yaad], NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk nc
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3}
CONNS=${CONNS:-10 50}
VARIANTS=("$@")
((${#VARIANTS[@]})) || VARIANTS=(1 2 4)
build
trap 'stop_server' EXIT

sync_stats() {
    printf 'stats\r\nquit\r\n' | timeout 2 nc -q1 "$HOST" "$PORT" 2>/dev/null |
        tr -d '\r' | awk '/^(syncs|sync-changes|sync-us):/ { printf "%s ", $2 }'
}

echo "threads conns cycles/s p50 p99 srv_us/cycle syncs changes/sync us/sync"
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${VARIANTS[@]}"; do
        for conns in $CONNS; do
            YAAD_ARGS="--sync-threads $t" start_server "yaad-${MODE:-mapped}" -f "${F:-0}"
            "$BENCH" cycle --addr "$ADDR" --conns "$conns" --duration 1 >/dev/null
            c0=$(server_cpu_s)
            json=$("$BENCH" cycle --addr "$ADDR" --conns "$conns" --duration "$DURATION" | tail -n 1)
            c1=$(server_cpu_s)
            read -r syncs changes us <<<"$(sync_stats)"
            stop_server
            read -r per_s p50 p99 units < <(echo "$json" |
                jq -r '[.per_s, .latency_us.unit.p50, .latency_us.unit.p99, .units] | @tsv')
            awk -v t="$t" -v c="$conns" -v r="$per_s" -v p50="$p50" -v p99="$p99" -v u="$units" \
                -v c0="$c0" -v c1="$c1" -v s="${syncs:-0}" -v ch="${changes:-0}" -v us="${us:-0}" \
                'BEGIN { printf "%7s %5s %8d %5d %6d %12.1f %6d %12.1f %7.0f\n", t, c, r, p50, p99,
                    (c1 - c0) * 1e6 / u, s, (s > 0 ? ch / s : 0), (s > 0 ? us / s : 0) }'
        done
    done
done
