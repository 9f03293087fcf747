#!/usr/bin/env bash
# Churn: every connection cycles put → reserve → delete of one job at a time for DURATION
# seconds, against each server on a fresh data directory, one after another in the same run.
# Per server: cycles per second, peak resident memory (VmHWM), VmRSS and the data directory
# (files, bytes) at the end of the run, the data directory's peak (sampled every 0.1 s), and
# whether the server survived.
#
# Usage: bench/churn.sh
# Environment (defaults in brackets):
#   DURATION seconds per run [6]     CONNS connection counts ["10"]     BODIES body sizes ["60000"]
#   (CONNS="10 50" BODIES="60000 1000": every combination, in this order)
#   SERVERS  which servers, in this order ["beanstalkd-b beanstalkd yaad-mapped yaad-lazy yaad-mem"]
#   PIPELINE commands in flight per connection [1]
#   BEANSTALKD [/usr/bin/beanstalkd]  YAAD [target/release/yaad]  PORT [11390]  SOCKET [tcp]
#   YAAD_ARGS  extra flags of every yaad server []
#   NO_BUILD=1 skip `cargo build --release --bins`     OUT  results dir [target/bench/churn-TIME]
# Bodies up to 65,535 bytes fit both servers' default job size limit.
# The table goes to OUT/table.md (markdown), every yaad-bench JSON line to OUT/runs.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk

DURATION=${DURATION:-6}
CONNS=${CONNS:-10}
BODIES=${BODIES:-60000}
PIPELINE=${PIPELINE:-1}
SERVERS=${SERVERS:-beanstalkd-b beanstalkd yaad-mapped yaad-lazy yaad-mem}
OUT=${OUT:-target/bench/churn-$(date -u +%Y%m%dT%H%M%SZ)}
for s in $SERVERS; do server_config "$s" >/dev/null; done

build
mkdir -p "$OUT"
trap 'stop_server' EXIT

rows=()
for body in $BODIES; do
    for conns in $CONNS; do
        for name in $SERVERS; do
            IFS='|' read -r label kind flags < <(server_config "$name")
            # shellcheck disable=SC2086 # flags are words
            start_server "$kind" $flags
            echo "churn: $label, $conns conns, body $body B, ${DURATION}s" >&2
            # The data directory's allocated size every 0.1 s during the run (its peak).
            peak_file="$OUT/peak-disk.tmp"
            : >"$peak_file"
            if [[ $kind != beanstalkd || -n $flags ]]; then
                (while :; do dir_kib >>"$peak_file" 2>/dev/null || true; sleep 0.1; done) &
                sampler=$!
            else
                sampler=
            fi
            cpu_before=$(server_cpu_s)
            json=$("$BENCH" cycle --addr "$ADDR" --duration "$DURATION" --conns "$conns" \
                --pipeline "$PIPELINE" --body "$body" --refusals-ok | tail -n 1) || true
            cpu_after=$(server_cpu_s)
            peak_disk=-
            if [[ -n $sampler ]]; then
                kill "$sampler" 2>/dev/null || true
                wait "$sampler" 2>/dev/null || true
                peak_disk=$(sort -n "$peak_file" | tail -n 1)
                [[ -n $peak_disk ]] || peak_disk=-
            fi
            rm -f "$peak_file"
            if [[ $(echo "$json" | jq -r type 2>/dev/null) != object ]]; then
                json='{"errors": 1, "fatal": "yaad-bench printed no JSON line"}'
            fi
            echo "$json" | jq -c --arg s "$label" --argjson b "$body" \
                '. + {server: $s, body: $b}' >>"$OUT/runs.jsonl"
            read -r units per_s refused errors < <(echo "$json" |
                jq -r '[.units // 0, .per_s // 0, .refused // 0, .errors // 1] | @tsv')
            fatal=$(echo "$json" | jq -r '.fatal // empty')
            # Right after the run: memory first, then the data directory as the run left it.
            rss=$(status_kib VmRSS)
            hwm=$(status_kib VmHWM)
            files=- disk=- apparent=-
            if [[ $kind != beanstalkd || -n $flags ]]; then
                files=$(dir_files)
                disk=$(dir_kib 2>/dev/null) || true
                apparent=$(dir_apparent_kib)
            fi
            state=$(health)
            [[ -z $fatal ]] || state="$state; bench: $fatal"
            if [[ $state != ok ]]; then
                echo "$label: $state; last lines of its log:" >&2
                tail -n 5 "$SERVER_DIR.log" >&2 || true
            fi
            cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" -v u="$units" \
                'BEGIN { if (u > 0 && a != "-" && b != "-") printf "%.1f", (b - a) * 1e6 / u; else print "-" }')
            stop_server
            rows+=("$body|$conns|$label|$per_s|$units|$refused|$errors|$state|$cpu|$hwm|$rss|$files|$disk|$apparent|$peak_disk")
        done
    done
done

{
    echo "churn: put → reserve → delete, ${DURATION}s per server, pipeline $PIPELINE"
    echo "host: $(nproc) CPUs, $(uname -r), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); $("$BEANSTALKD" -v 2>&1 | head -n 1)"
    echo
    printf '%s\n' "${rows[@]}" | awk -F'|' '
        function mib(k) { return k == "-" || k == "" ? "-" : sprintf("%.1f", k / 1024) }
        function num(x,    s) {
            if (x !~ /^[0-9]+$/) return x
            s = ""
            while (length(x) > 3) { s = "," substr(x, length(x) - 2) s; x = substr(x, 1, length(x) - 3) }
            return x s
        }
        BEGIN {
            print "| body B | conns | server | cycles/s | refused | state | server CPU µs/cycle | peak RSS MiB | RSS at end MiB | files | disk MiB (du) | apparent MiB | peak disk MiB |"
            print "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        }
        {
            state = $8
            if ($7 > 0) state = state "; errors " $7
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", num($1), $2, $3, \
                num($4), num($6), state, $9, mib($10), mib($11), num($12), mib($13), mib($14), mib($15)
        }'
    echo
    echo "peak RSS = VmHWM after the run; RSS at end = VmRSS then; files and disk = the data"
    echo "directory right after the run (du: allocated blocks; apparent: file lengths); peak disk ="
    echo "the most du found in samples every 0.1 s during the run."
} | tee "$OUT/table.md"
echo "raw results: $OUT/runs.jsonl" >&2
