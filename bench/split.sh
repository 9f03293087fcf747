#!/usr/bin/env bash
# Split holds: N far puts whose delays (DELAY, 125..175 s) fall in 1-minute spokes, which yaad
# splits into 1-second spokes a minute before they start. Prints, every 10 s for WATCH
# samples (10: until just before the jobs are due), the hub lock's acquisitions, held time
# and holds ≥ 1 ms / ≥ 5 ms by kind (`stats` hub-lock-*), zero counters left out.
#
# Usage: bench/split.sh [MODE...]   modes: mapped lazy [lazy]
# Environment: N [1000000]  DELAY [125..175]  WATCH [10]  YAAD_ARGS  YAAD  PORT [11390]
#   NO_BUILD=1 skip `cargo build --release --bins`
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk

N=${N:-1000000}
DELAY=${DELAY:-125..175}
WATCH=${WATCH:-10}
MODES=("$@")
((${#MODES[@]})) || MODES=(lazy)
build
trap 'stop_server' EXIT

holds() {
    server_stats | awk '/^hub-lock-(acquisitions|held-us|holds-over|timer-cpu)/ && $2 != 0 { printf "%s ", $0 }'
    echo
}

for mode in "${MODES[@]}"; do
    start_server "yaad-$mode"
    echo "split: yaad $mode, $N puts, delays $DELAY s; load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BENCH" put --addr "$ADDR" --count "$N" --delay "$DELAY" --conns 10 --body 100 |
        tail -n 1 | jq -c '{per_s, refused}'
    for ((i = 1; i <= WATCH; i++)); do
        sleep 10
        echo "t=$((i * 10))s $(holds)"
    done
    stop_server
done
