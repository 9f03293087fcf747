#!/usr/bin/env bash
# Delivery timing: loads BACKGROUND far-delayed jobs into a fresh server, then has producers put
# COUNT jobs stamped with their trigger time and consumers measure how late each arrives
# (yaad-bench timing). Prints the generator's report; its last line is JSON.
#
# Usage: bench/timing.sh KIND [BACKGROUND]
#   KIND: beanstalkd, beanstalkd-b, yaad-mem, yaad-mapped, yaad-lazy
#   BACKGROUND: far-delayed jobs loaded first [1000000]
# Environment: COUNT [20000]  RATE jobs/s [2000]  DELAY s [1..3]  CONNS consumers [4]
#   SERVER_ARGS extra server flags []  NO_BUILD=1  PORT [11390]  SOCKET [tcp|unix]
# Target (issue 6): lateness p99 ≤ 1 ms and max ≤ 5 ms with 1M other jobs delayed, none early.
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
SERVER_ARGS=${SERVER_ARGS:-}

build
# shellcheck disable=SC2086
start_kind "$KIND" $SERVER_ARGS
status=0
"$BENCH" timing --addr "$ADDR" --tube timing --count "$COUNT" --rate "$RATE" --delay "$DELAY" \
    --conns "$CONNS" --background "$BACKGROUND" || status=$?
echo "$KIND: VmRSS $(( $(status_kib VmRSS) / 1024 )) MiB after the run"
exit "$status"
