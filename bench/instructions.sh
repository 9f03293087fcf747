#!/usr/bin/env bash
# User-space instructions per far put, counted by callgrind: a figure this noisy machine cannot
# blur (wall and CPU time move with the host), for comparing two builds of the request path.
# Kernel work (syscalls, page faults) is not in it. For each binary, a fresh yaad is run under
# `valgrind --tool=callgrind` twice, once idle and once taking N far puts; the difference
# (every thread) divided by N is printed.
#
# Usage: bench/instructions.sh [YAAD_BINARY...]   (default: target/release/yaad)
# Environment: N [50000]  DELAY [60..86400]  MODE [lazy]  CONNS [10]  PORT [11390]
#   KEEP=DIR  keep callgrind's output files there (callgrind_annotate DIR/<binary>.<puts>)
#   NO_BUILD=1 skip `cargo build --release --bins`
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need valgrind callgrind_annotate awk

N=${N:-50000}
DELAY=${DELAY:-60..86400}
MODE=${MODE:-lazy}
CONNS=${CONNS:-10}
BINS=("$@")
((${#BINS[@]})) || BINS=("$YAAD")
build
OUT=$(mktemp -d "${TMPDIR:-/tmp}/yaad-instructions.XXXXXX")
trap 'stop_server; rm -rf "$OUT"' EXIT

# total BINARY PUTS: the instructions callgrind counts over a server's life with PUTS puts.
total() {
    local out="$OUT/callgrind.$2"
    YAAD=$1
    SERVER_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$out")
    start_server "yaad-$MODE"
    if (($2 > 0)); then
        "$BENCH" put --addr "$ADDR" --count "$2" --delay "$DELAY" --conns "$CONNS" --body 100 \
            >/dev/null
    fi
    stop_server
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"
        cp "$out" "$KEEP/$(basename "$1").$2"
    fi
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ { gsub(",", "", $1); print $1 }'
}

echo "binary mode puts delay instructions_per_put"
for bin in "${BINS[@]}"; do
    idle=$(total "$bin" 0)
    busy=$(total "$bin" "$N")
    echo "$bin $MODE $N $DELAY $(((busy - idle) / N))"
done
