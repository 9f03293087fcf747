#!/usr/bin/env bash
# Far puts: N delayed puts (100-byte bodies, 10 connections) with delays uniform over a range,
# into each server on a fresh data directory, one after another in the same run. Per server:
# jobs accepted per second, puts refused (OUT_OF_MEMORY and the like: counted, the run goes
# on), the server's CPU time per put accepted, whether the server survived, files and bytes in
# its data directory, its memory mappings, VmRSS after the puts and the RSS growth per job held,
# and the CPU time the host took from this virtual machine during the puts (steal).
#
# Usage: bench/horizon.sh [RANGE...]        (default: 30d)
#   RANGE: a preset or A..B seconds (yaad-bench --delay)
#     1-2h  3600..7200         1d  60..86400
#     30d   60..2592000        1y  60..31536000
# Environment (defaults in brackets):
#   N        puts per pass [200000]          PASSES  passes of N puts into the same server [1]
#            (a second pass puts into spokes the first one made)
#   CONNS    connections [10]                PIPELINE commands in flight per connection [1]
#   BODY     body bytes [100]
#   SERVERS  which servers, in this order ["beanstalkd-b beanstalkd yaad-mapped yaad-lazy yaad-mem"];
#            null adds the canned-reply server (the machine's ceiling for the load; build it
#            with cargo build --release --example null-server)
#   IDLE     seconds without a reply before a connection is abandoned [30]
#   STOP_WAIT seconds the server may take to exit after SIGTERM before SIGKILL [120]
#   BEANSTALKD [/usr/bin/beanstalkd]  YAAD [target/release/yaad]  PORT [11390]  SOCKET [tcp]
#   YAAD_ARGS  extra flags of every yaad server []
#   NO_BUILD=1 skip `cargo build --release --bins`     OUT  results dir [target/bench/horizon-TIME]
# Examples:
#   bench/horizon.sh 30d 1-2h
#   N=10000000 SERVERS="beanstalkd yaad-lazy" bench/horizon.sh 1y
# The table goes to OUT/table.md (markdown), every yaad-bench JSON line to OUT/runs.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk

N=${N:-200000}
PASSES=${PASSES:-1}
CONNS=${CONNS:-10}
PIPELINE=${PIPELINE:-1}
BODY=${BODY:-100}
SERVERS=${SERVERS:-beanstalkd-b beanstalkd yaad-mapped yaad-lazy yaad-mem}
IDLE=${IDLE:-30}
STOP_WAIT=${STOP_WAIT:-120}
OUT=${OUT:-target/bench/horizon-$(date -u +%Y%m%dT%H%M%SZ)}
RANGES=("$@")
((${#RANGES[@]})) || RANGES=(30d)

# range_of PRESET: the delay range in seconds.
range_of() {
    case $1 in
        1-2h) echo 3600..7200 ;;
        1d) echo 60..86400 ;;
        30d) echo 60..2592000 ;;
        1y) echo 60..31536000 ;;
        *..*) echo "$1" ;;
        *) die "unknown range $1 (1-2h, 1d, 30d, 1y or A..B seconds)" ;;
    esac
}
for r in "${RANGES[@]}"; do range_of "$r" >/dev/null; done
for s in $SERVERS; do server_config "$s" >/dev/null; done

build
mkdir -p "$OUT"
trap 'stop_server' EXIT

rows=()
for preset in "${RANGES[@]}"; do
    delay=$(range_of "$preset")
    for name in $SERVERS; do
        IFS='|' read -r label kind flags < <(server_config "$name")
        # shellcheck disable=SC2086 # flags are words
        start_server "$kind" $flags
        sleep 0.2
        base=$(status_kib VmRSS)
        held=0
        state=ok
        for ((pass = 1; pass <= PASSES; pass++)); do
            echo "$preset ($delay s): $N puts into $label, pass $pass/$PASSES" >&2
            cpu_before=$(server_cpu_s)
            steal_before=$(host_steal_ms)
            json=$("$BENCH" put --addr "$ADDR" --count "$N" --delay "$delay" --conns "$CONNS" \
                --pipeline "$PIPELINE" --body "$BODY" --refusals-ok --idle-timeout "$IDLE" |
                tail -n 1) || true
            cpu_after=$(server_cpu_s)
            steal=$(($(host_steal_ms) - steal_before))
            if [[ $(echo "$json" | jq -r type 2>/dev/null) != object ]]; then
                json='{"errors": 1, "fatal": "yaad-bench printed no JSON line"}'
            fi
            echo "$json" | jq -c --arg r "$preset" --arg s "$label" --argjson p "$pass" \
                '. + {range: $r, server: $s, pass: $p}' >>"$OUT/runs.jsonl"
            read -r units wall refused errors < <(echo "$json" |
                jq -r '[.units // 0, .wall_s // 0, .refused // 0, .errors // 1] | @tsv')
            fatal=$(echo "$json" | jq -r '.fatal // empty')
            held=$((held + units))
            cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" -v u="$units" \
                'BEGIN { if (u > 0 && a != "-" && b != "-") printf "%.1f", (b - a) * 1e6 / u; else print "-" }')
            # Let the periodic flush and checkpoint run, and far spokes idle for a second
            # drop their pages (swept once a second), before reading memory and disk: RSS is
            # the idle figure, peak the one under load.
            sleep 3
            if [[ $kind == null ]]; then
                # No stats: alive is all it can say.
                state=ok
                server_alive || state="crashed (exit $(server_exit_status))"
            else
                state=$(health)
            fi
            [[ -z $fatal ]] || state="$state; bench: $fatal"
            delayed=-
            rss=- hwm=- maps=-
            if [[ $state == ok* && $kind != null ]]; then
                # Jobs whose delay ran out during the run are ready, not lost.
                d=$(server_stat current-jobs-delayed)
                r=$(server_stat current-jobs-ready)
                delayed=$((${d:-0} + ${r:-0}))
                rss=$(status_kib VmRSS)
                hwm=$(status_kib VmHWM)
                maps=$(server_maps)
            else
                echo "$label: $state; last lines of its log:" >&2
                tail -n 5 "$SERVER_DIR.log" >&2 || true
            fi
            files=- disk=- apparent=-
            if [[ $kind != beanstalkd && $kind != null || -n $flags ]]; then
                files=$(dir_files)
                disk=$(dir_kib 2>/dev/null) || true
                apparent=$(dir_apparent_kib)
            fi
            rows+=("$preset|$label|$pass|$units|$wall|$refused|$errors|$delayed|$state|$files|$disk|$apparent|$maps|$base|$rss|$hwm|$held|$cpu|$steal")
            [[ $state == ok ]] || break
        done
        # Time SIGTERM to exit, up to STOP_WAIT s (stop_server then sends SIGKILL).
        began=$(now_s)
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for ((waited = 0; waited < STOP_WAIT * 10; waited++)); do
            server_alive || break
            sleep 0.1
        done
        if server_alive; then
            stopped="> $STOP_WAIT (killed)"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        else
            stopped=$(awk -v a="$began" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }')
        fi
        stop_server
        rows[-1]="${rows[-1]}|$stopped"
    done
done

{
    echo "far puts: $N per pass, $CONNS conns, pipeline $PIPELINE, body $BODY B; delays uniform over the range"
    echo "host: $(nproc) CPUs, $(uname -r), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); $("$BEANSTALKD" -v 2>&1 | head -n 1)"
    echo
    printf '%s\n' "${rows[@]}" | awk -F'|' '
        function mib(k) { return k == "-" || k == "" ? "-" : sprintf("%.1f", k / 1024) }
        function num(x,    s, neg) {
            # Thousands separators for a whole number.
            if (x !~ /^[0-9]+$/) return x
            s = ""
            while (length(x) > 3) { s = "," substr(x, length(x) - 2) s; x = substr(x, 1, length(x) - 3) }
            return x s
        }
        BEGIN {
            print "| range | server | pass | accepted/s | server µs/put | refused | jobs held | state | files | disk MiB (du) | apparent MiB | mappings | RSS MiB | peak MiB | RAM bytes/job | stop s | host steal ms |"
            print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        }
        {
            rate = $5 > 0 ? sprintf("%.0f", $4 / $5) : "-"
            per_job = ($15 != "-" && $15 != "" && $14 != "-" && $17 > 0) ? sprintf("%.0f", ($15 - $14) * 1024 / $17) : "-"
            state = $9
            if ($7 > 0) state = state "; errors " $7
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", \
                $1, $2, $3, num(rate), $18, num($6), num($8), state, num($10), mib($11), mib($12), \
                num($13), mib($15), mib($16), num(per_job), ($20 == "" ? "" : $20), num($19)
        }'
    echo
    echo "accepted/s = puts answered INSERTED ÷ the wall time of the pass; server µs/put = the server's CPU"
    echo "time (user + system, /proc/PID/stat) during the pass ÷ puts accepted; refused = puts answered otherwise"
    echo "(OUT_OF_MEMORY, BURIED, ...); jobs held = the server's current-jobs-delayed + -ready after the pass;"
    echo "RAM bytes/job = (VmRSS after the pass − VmRSS at start) ÷ jobs accepted so far;"
    echo "state: ok, crashed (exit N), wedged (no answer to stats in 10 s); stop s = SIGTERM to exit"
    echo "(SIGKILL after STOP_WAIT = $STOP_WAIT s); host steal ms = CPU time the hypervisor took from this"
    echo "machine during the pass (/proc/stat): a row with hundreds of ms or more measured the host too."
} | tee "$OUT/table.md"
echo "raw results: $OUT/runs.jsonl" >&2
