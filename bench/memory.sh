#!/usr/bin/env bash
# Memory per delayed job: puts N delayed jobs (100-byte bodies, delays 1–2 h by default) into a
# fresh server and reports its resident memory per job, the data directory's size, and (with
# RESTART=1, disk kinds) how long a restart takes to answer and to show every job again.
#
# Usage: bench/memory.sh KIND [N]
#   KIND: beanstalkd (in memory), beanstalkd-b (-b DIR), yaad-mem, yaad-mapped, yaad-lazy
#   N:    jobs [1000000]
# Environment: BODY [100]  DELAY [3600..7200]  CONNS [4]  PIPELINE [64]
#   RESTART [0]: 1 = restart after SIGTERM (clean summary); kill = after kill -9 (SETTLE s
#   after the last put, so the once-a-second checkpoint has run; the log says how many
#   segments the restart scanned)
#   SETTLE [2]: seconds between the last put and the kill -9 (named jobs: the checkpoint
#   after the one that lists a spoke scans it for its names file, see NOTES.md)
#   SERVER_ARGS extra server flags []  NO_BUILD=1 skip the build  PORT [11390]  SOCKET [tcp|unix]
#   NAMED [0]: 1 = named jobs (put-named, a name of its own per job; yaad only)
# Examples:
#   bench/memory.sh beanstalkd 1000000    # the reference (~300 bytes per job)
#   RESTART=1 bench/memory.sh yaad-lazy 10000000
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk

KIND=${1:?usage: bench/memory.sh KIND [N]}
N=${2:-1000000}
BODY=${BODY:-100}
DELAY=${DELAY:-3600..7200}
CONNS=${CONNS:-4}
PIPELINE=${PIPELINE:-64}
SERVER_ARGS=${SERVER_ARGS:-}

build
# shellcheck disable=SC2086
start_kind "$KIND" $SERVER_ARGS
sleep 0.2
base=$(status_kib VmRSS)
named=()
[[ ${NAMED:-0} == 1 ]] && named=(--named)
json=$("$BENCH" put --addr "$ADDR" --count "$N" --body "$BODY" --delay "$DELAY" \
    --conns "$CONNS" --pipeline "$PIPELINE" "${named[@]}" | tail -n 1) || true
errors=$(echo "$json" | jq -r '.errors // 1')
secs=$(echo "$json" | jq -r '.elapsed_s // 0')
delayed=$(server_stat current-jobs-delayed)
# Far spokes idle for a second drop their pages (swept once a second): RSS is the idle figure.
sleep 3
rss=$(status_kib VmRSS)
hwm=$(status_kib VmHWM)
disk=$(dir_kib)
echo "$KIND: $N delayed jobs of $BODY bytes put in ${secs}s, errors $errors; server reports $delayed delayed"
awk -v n="$N" -v base="$base" -v rss="$rss" -v hwm="$hwm" -v disk="$disk" 'BEGIN {
    printf "VmRSS: %.1f MiB at start, %.1f MiB with the jobs (peak %.1f MiB)\n", base/1024, rss/1024, hwm/1024
    printf "RSS per job: %.1f bytes (over the start), %.1f bytes (all)\n", (rss-base)*1024/n, rss*1024/n
    printf "data dir: %.1f MiB, %.1f bytes per job\n", disk/1024, disk*1024/n
}'
restart_json=
if [[ ${RESTART:-0} != 0 && $KIND != beanstalkd ]]; then
    dir=$SERVER_DIR
    if [[ $RESTART == kill ]]; then
        sleep "${SETTLE:-2}"
        STOP_SIGNAL=KILL stop_server keep
    else
        stop_server keep
    fi
    began=$(now_s)
    # shellcheck disable=SC2086
    KEEP_DIR=$dir start_server "$kind" $flags
    listening=$(awk -v a="$began" -v b="$(now_s)" 'BEGIN { printf "%.3f", b - a }')
    # A listening socket is not yet an answering server (beanstalkd replays its binlog after
    # listen()): time the first answer to `stats`, then the moment every job is back.
    first=$(server_stat current-jobs-delayed)
    answering=$(awk -v a="$began" -v b="$(now_s)" 'BEGIN { printf "%.3f", b - a }')
    waited=0
    while [[ $first != "$delayed" ]] && ((waited < 12000)); do
        sleep 0.01
        waited=$((waited + 1))
        first=$(server_stat current-jobs-delayed)
    done
    complete=$(awk -v a="$began" -v b="$(now_s)" 'BEGIN { printf "%.3f", b - a }')
    rss2=$(status_kib VmRSS)
    grep -h -o 'segments_scanned=[0-9]* segments_from_summary=[0-9]*' "$dir.log" 2>/dev/null | tail -n 1 || true
    echo "restart: listening after ${listening}s, answering after ${answering}s, $first of $delayed jobs back after ${complete}s, VmRSS $((rss2 / 1024)) MiB"
    restart_json=$(jq -nc --argjson l "$listening" --argjson a "$answering" \
        --argjson c "$complete" --argjson r "$rss2" --argjson j "${first:-0}" \
        '{listen_s: $l, answer_s: $a, complete_s: $c, jobs_back: $j, rss_kib: $r}')
    stop_server keep
    rm -rf "$dir" "$dir.log"
fi
jq -nc --arg kind "$KIND" --argjson n "$N" --argjson base "$base" --argjson rss "$rss" \
    --argjson hwm "$hwm" --argjson disk "$disk" --argjson errors "$errors" \
    --argjson restart "${restart_json:-null}" \
    '{kind: $kind, jobs: $n, rss_start_kib: $base, rss_kib: $rss, peak_kib: $hwm,
      rss_bytes_per_job: (($rss - $base) * 1024 / $n), disk_kib: $disk, errors: $errors,
      restart: $restart}'
