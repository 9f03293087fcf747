#!/usr/bin/env bash
# Thread hand-offs per unit of work: for each thread name of the server, its voluntary context
# switches per unit (each a sleep: on a condition variable, in epoll, in an fdatasync), the
# involuntary ones (preempted), and its CPU µs per unit; beside them the run's units/s, unit
# latency p50/p99 and, for yaad, syncs per unit and changes per sync (from `stats`).
#
# Usage: bench/switches.sh [KIND [FLAGS...]]   KIND as lib.sh's start_server (default:
#                                              yaad-mapped -f 0)
# Environment: CONNS ["10 50"], DURATION [5], WORKLOAD [cycle], WARMUP [1], NO_BUILD=1, YAAD,
# PORT, and the other variables of bench/lib.sh. One fresh server per connection count.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk

CONNS=${CONNS:-10 50}
DURATION=${DURATION:-5}
WORKLOAD=${WORKLOAD:-cycle}
WARMUP=${WARMUP:-1}
KIND=${1:-yaad-mapped}
shift || true
FLAGS=("$@")
if [[ $# -eq 0 && $KIND == yaad-* ]]; then FLAGS=(-f 0); fi

build
trap 'stop_server' EXIT

# One line per thread: name, voluntary switches, involuntary switches, CPU ticks.
threads() {
    local t
    for t in /proc/"$SERVER_PID"/task/*; do
        printf '%s %s %s\n' "$(tr ' ' _ <"$t/comm")" \
            "$(awk '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { print v, n }' "$t/status")" \
            "$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$t/stat")"
    done
}

for conns in $CONNS; do
    start_server "$KIND" "${FLAGS[@]}"
    common=(--addr "$ADDR" --conns "$conns")
    if [[ $WARMUP != 0 ]]; then
        "$BENCH" "$WORKLOAD" "${common[@]}" --duration "$WARMUP" >/dev/null
    fi
    before=$(threads)
    syncs0=$(server_stat syncs)
    changes0=$(server_stat sync-changes)
    json=$("$BENCH" "$WORKLOAD" "${common[@]}" --duration "$DURATION" | tail -n 1)
    after=$(threads)
    syncs1=$(server_stat syncs)
    changes1=$(server_stat sync-changes)
    units=$(jq .units <<<"$json")
    echo "$KIND ${FLAGS[*]}, $WORKLOAD, $conns conns: $(jq -r '"\(.per_s) units/s, p50 \(.latency_us.unit.p50) µs, p99 \(.latency_us.unit.p99) µs"' <<<"$json"), load $(cut -d' ' -f1 /proc/loadavg)"
    if [[ -n $syncs0 && -n $syncs1 && $syncs1 != "$syncs0" ]]; then
        awk -v s="$((syncs1 - syncs0))" -v c="$((changes1 - changes0))" -v u="$units" \
            'BEGIN { printf "  syncs/unit %.3f, changes/sync %.1f\n", s / u, c / s }'
    fi
    # Threads are matched by their place in the listing (a thread started during the run,
    # e.g. a blocking-pool one, is left out).
    paste -d' ' <(echo "$before") <(echo "$after") | awk -v u="$units" '
        NF == 8 && $1 == $5 { n[$1]++; v[$1] += $6 - $2; i[$1] += $7 - $3; c[$1] += $8 - $4 }
        END { for (k in n) printf "  %-16s x%d  voluntary/unit %.2f  involuntary/unit %.2f  cpu µs/unit %.1f\n",
              k, n[k], v[k] / u, i[k] / u, c[k] * 10000 / u }' | sort
    stop_server
done
