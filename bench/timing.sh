#!/usr/bin/env bash
# Delivery timing: loads BACKGROUND far-delayed jobs into a fresh server, then has producers put
# COUNT jobs stamped with their trigger time and consumers measure how late each arrives
# (yaad-bench timing). Prints the generator's report; its last line is JSON.
#
# Usage: bench/timing.sh KIND [BACKGROUND]
#   KIND: beanstalkd, beanstalkd-b, yaad-mem, yaad-mapped, yaad-lazy
#   BACKGROUND: far-delayed jobs loaded first [1000000]
# Environment: COUNT [20000]  RATE jobs/s [2000]  DELAY s [1..3]  CONNS consumers [4]
#   BG_DELAY the background jobs' delays, s [3600..7200] (60..2592000: spread over 30 days)
#   SERVER_ARGS extra server flags []  NO_BUILD=1  PORT [11390]  SOCKET [tcp|unix]
# Target: lateness p99 ≤ 1 ms and max ≤ 5 ms with 1M other jobs delayed, none early.
# yaad over TCP: also prints its hub-lock holds of ≥ 1 ms / ≥ 5 ms during the timing phase (after
# the background load), by kind (`stats` keys hub-lock-holds-over-*; see src/server/core.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq

KIND=${1:?usage: bench/timing.sh KIND [BACKGROUND]}
BACKGROUND=${2:-1000000}
COUNT=${COUNT:-20000}
RATE=${RATE:-2000}
DELAY=${DELAY:-1..3}
CONNS=${CONNS:-4}
BG_DELAY=${BG_DELAY:-3600..7200}
SERVER_ARGS=${SERVER_ARGS:-}

# Prints yaad's `hub-lock-holds-over-*` stats lines ("key: n"); nothing for other servers.
hold_stats() {
    [[ $KIND == yaad-* && $SOCKET == tcp ]] || return 0
    local ok len
    exec 3<>"/dev/tcp/$HOST/$PORT"
    printf 'stats\r\n' >&3
    read -r ok len <&3
    len=${len%$'\r'}
    [[ $ok == OK ]] && head -c "$((len + 2))" <&3 | grep '^hub-lock-holds-over' || true
    exec 3>&-
}

build
# shellcheck disable=SC2086
start_kind "$KIND" $SERVER_ARGS
before=$(mktemp)
trap 'rm -f "$before"; stop_server' EXIT
status=0
set +e
"$BENCH" timing --addr "$ADDR" --tube timing --count "$COUNT" --rate "$RATE" --delay "$DELAY" \
    --conns "$CONNS" --background "$BACKGROUND" --background-delay "$BG_DELAY" | while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ $line == background:* ]]; then hold_stats >"$before"; fi
done
status=${PIPESTATUS[0]}
set -e
if [[ $KIND == yaad-* && $SOCKET == tcp ]]; then
    # "kind ≥1ms/≥5ms" for the kinds with any, counted from the end of the background load.
    hold_stats | awk -v before="$before" '
        BEGIN { while ((getline l < before) > 0) { split(l, f, ": "); was[f[1]] = f[2] } }
        { split($0, f, ": "); n = f[2] - was[f[1]]; k = f[1]; sub(/hub-lock-holds-over-/, "", k)
          split(k, p, "-"); c[p[2]] = c[p[2]] (p[1] == "1ms" ? n : "/" n)
          if (p[1] == "1ms") order[++m] = p[2] }
        END { s = ""; for (i = 1; i <= m; i++) if (c[order[i]] != "0/0") s = s " " order[i] " " c[order[i]]
              print "hub-lock holds >= 1ms/>= 5ms in the timing phase:" (s == "" ? " none" : s) }'
fi
echo "$KIND: VmRSS $(( $(status_kib VmRSS) / 1024 )) MiB after the run"
exit "$status"
