#!/usr/bin/env bash
# How busy the hub lock is under load: for each server and connection count, `yaad-bench cycle`
# runs against a fresh yaad and the hub-lock-* figures of `stats` before and after give lock
# utilisation (time held / run time), contention and the average hold.
#
#   bench/lockstats.sh [KIND[:FLAGS]...]   default: yaad-mem yaad-mapped yaad-mapped:-f,0 yaad-lazy
#
# KIND is yaad-mem, yaad-mapped or yaad-lazy; FLAGS (comma-separated) are extra server flags.
# Environment: CONNS (default "10 50"), DURATION (s, default 10), WORKLOAD (default cycle),
# PORT, SOCKET (see lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
need jq
CONNS=${CONNS:-10 50}
DURATION=${DURATION:-10}
WORKLOAD=${WORKLOAD:-cycle}
[[ $# -gt 0 ]] || set -- yaad-mem yaad-mapped yaad-mapped:-f,0 yaad-lazy
trap stop_server EXIT

printf '%-22s %5s %9s %7s %9s %9s %9s %8s\n' server conns units/s "acq/u" contended held% avg-hold srv-cpu%
for spec in "$@"; do
    kind=${spec%%:*}
    flags=()
    [[ $spec == *:* ]] && IFS=, read -r -a flags <<<"${spec#*:}"
    start_server "$kind" "${flags[@]}"
    "$BENCH" "$WORKLOAD" --addr "$ADDR" --duration 1 --conns 10 >/dev/null 2>&1 || true
    for c in $CONNS; do
        a=() b=()
        for k in acquisitions contended held-us; do a+=("$(server_stat "hub-lock-$k")"); done
        cpu0=$(server_cpu_s)
        out=$("$BENCH" "$WORKLOAD" --addr "$ADDR" --duration "$DURATION" --conns "$c" 2>/dev/null | tail -1)
        cpu1=$(server_cpu_s)
        for k in acquisitions contended held-us; do b+=("$(server_stat "hub-lock-$k")"); done
        units=$(jq -r .units <<<"$out")
        per_s=$(jq -r .per_s <<<"$out")
        awk -v name="$spec" -v c="$c" -v u="$units" -v ps="$per_s" -v a0="${a[0]}" -v a1="${b[0]}" \
            -v c0="${a[1]}" -v c1="${b[1]}" -v h0="${a[2]}" -v h1="${b[2]}" -v p0="$cpu0" -v p1="$cpu1" '
            BEGIN {
                acq = a1 - a0; held = h1 - h0; wall = u / ps * 1e6
                printf "%-22s %5d %9.0f %7.2f %8.2f%% %8.1f%% %7.2fus %7.0f%%\n", name, c, ps,
                    acq / u, 100 * (c1 - c0) / acq, 100 * held / wall, held / acq,
                    100 * (p1 - p0) * 1e6 / wall
            }'
    done
    stop_server
done
