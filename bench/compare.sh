#!/usr/bin/env bash
# Side-by-side comparison of beanstalkd 1.12 and yaad on loopback with identical yaad-bench
# workloads; prints a table of figures and ratios (yaad ÷ beanstalkd) and the servers' memory.
#
# Usage: bench/compare.sh [GROUP...]     (run from anywhere; it works in the repository root)
#   GROUP: mem    beanstalkd (in memory)       vs yaad --mode mem
#          disk   beanstalkd -b DIR (-f 50)    vs yaad --mode mapped / lazy -b DIR (default flush)
#          fsync  beanstalkd -b DIR -f 0       vs yaad --mode mapped / lazy -b DIR -f 0, and
#                 yaad mapped / lazy -f 50: each -f 0 row also shows its share of the -f 50
#                 row of the same binary and mode in the same run (column "÷f50")
#          (default: all three)
# Environment (defaults in brackets):
#   DURATION  seconds per run [5]          CONNS     connection counts ["10 50"]
#   REPEAT    rounds; the table shows medians [3]
#   WORKLOAD  yaad-bench mode [cycle]      PIPELINE  commands in flight per connection [1]
#   BODY      body bytes [100]             WARMUP    seconds of unmeasured load first [1]
#   BENCH_ARGS extra yaad-bench flags []   PIN=1     server on CPU 0, yaad-bench on CPU 1
#   RT=1      server and yaad-bench as real-time threads (chrt -f 1; needs root): a thread
#             woken (a sync done, a reply come) runs at once instead of waiting for busy cores,
#             so the figures show the device and the CPU, not the other load (a diagnostic:
#             the servers then take the cores from everything else)
#   SOCKET    tcp (loopback HOST:PORT) or unix (a Unix-domain socket, less kernel work) [tcp]
#   BEANSTALKD [/usr/bin/beanstalkd]  YAAD [target/release/yaad]  PORT [11390]
#   YAAD_ARGS  extra flags of every yaad server (e.g. "--threads 2") []
#   YAAD_B    a second yaad binary: every yaad row runs with it too, in the same rounds
#             (interleaved A/B), labelled "B ..." []   YAAD_B_ARGS  its extra flags [YAAD_ARGS]
#   NULL=1    add a `null` row to the mem group: bench/null_server.rs, a one-thread server that
#             keeps nothing and sends canned replies: the most any server can reach here (TCP)
#   NO_BUILD=1 skip `cargo build --release --bins`     OUT  results dir [target/bench/compare-TIME]
# Every run starts a fresh server with an empty data directory; rounds interleave the servers.
# Raw yaad-bench JSON lines go to OUT/runs.jsonl and the table to OUT/table.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk

DURATION=${DURATION:-5}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-10 50}
WORKLOAD=${WORKLOAD:-cycle}
PIPELINE=${PIPELINE:-1}
BODY=${BODY:-100}
WARMUP=${WARMUP:-1}
BENCH_ARGS=${BENCH_ARGS:-}
OUT=${OUT:-target/bench/compare-$(date -u +%Y%m%dT%H%M%SZ)}
GROUPS_TO_RUN=("$@")
((${#GROUPS_TO_RUN[@]})) || GROUPS_TO_RUN=(mem disk fsync)

build
mkdir -p "$OUT"
trap 'stop_server' EXIT

bench_cpus=()
if [[ ${PIN:-0} == 1 ]]; then
    need taskset
    SERVER_WRAP=(taskset -c 0)
    bench_cpus=(taskset -c 1)
fi
if [[ ${RT:-0} == 1 ]]; then
    need chrt
    SERVER_WRAP=(chrt -f 1 "${SERVER_WRAP[@]}")
    bench_cpus=(chrt -f 1 "${bench_cpus[@]}")
fi

# The servers of each group: "label|kind|flags" (DIR stands for a fresh data directory).
configs() {
    case $1 in
        mem)
            printf '%s\n' "beanstalkd|beanstalkd|" "yaad mem|yaad-mem|"
            if [[ ${NULL:-0} == 1 ]]; then printf '%s\n' "null (ceiling)|null|"; fi
            ;;
        disk) printf '%s\n' "beanstalkd -b|beanstalkd|-b DIR" "yaad mapped|yaad-mapped|" \
            "yaad lazy|yaad-lazy|" ;;
        fsync) printf '%s\n' "beanstalkd -b -f0|beanstalkd|-b DIR -f 0" \
            "yaad mapped -f50|yaad-mapped|-f 50" "yaad mapped -f0|yaad-mapped|-f 0" \
            "yaad lazy -f50|yaad-lazy|-f 50" "yaad lazy -f0|yaad-lazy|-f 0" ;;
        *) die "unknown group $1 (mem, disk, fsync)" ;;
    esac
}

# run_one GROUP LABEL KIND FLAGS CONNS: one fresh server, one measured run; appends
# "group|label|conns|per_s|p50|p99|errors|server_cpu_us_per_unit|rss_kib|hwm_kib" to results.
results=()
run_one() {
    local group=$1 label=$2 kind=$3 flags=$4 conns=$5
    # shellcheck disable=SC2086 # flags are words
    start_server "$kind" $flags
    local common=(--addr "$ADDR" --conns "$conns" --pipeline "$PIPELINE" --body "$BODY")
    if [[ $WARMUP != 0 ]]; then
        # shellcheck disable=SC2086
        "${bench_cpus[@]}" "$BENCH" "$WORKLOAD" "${common[@]}" --duration "$WARMUP" $BENCH_ARGS \
            >/dev/null || true
    fi
    local cpu_before json cpu_after
    cpu_before=$(server_cpu_s)
    # shellcheck disable=SC2086
    json=$("${bench_cpus[@]}" "$BENCH" "$WORKLOAD" "${common[@]}" --duration "$DURATION" \
        $BENCH_ARGS | tail -n 1) || true
    cpu_after=$(server_cpu_s)
    if [[ $(echo "$json" | jq -r type 2>/dev/null) != object ]]; then
        json='{"errors": 1, "fatal": "yaad-bench printed no JSON line"}'
    fi
    local rss hwm
    rss=$(status_kib VmRSS)
    hwm=$(status_kib VmHWM)
    stop_server
    echo "$json" | jq -c --arg g "$group" --arg l "$label" --argjson r "$round" \
        '. + {group: $g, server: $l, round: $r, server_rss_kib: '"${rss/-/null}"'}' \
        >>"$OUT/runs.jsonl"
    local units per_s p50 p99 errors
    read -r units per_s p50 p99 errors < <(echo "$json" |
        jq -r '[.units // 0, .per_s // 0, .latency_us.unit.p50 // 0, .latency_us.unit.p99 // 0,
                .errors // 1] | @tsv')
    local cpu_per_unit
    cpu_per_unit=$(awk -v a="$cpu_before" -v b="$cpu_after" -v u="$units" \
        'BEGIN { if (u > 0 && a != "-" && b != "-") printf "%.1f", (b - a) * 1e6 / u; else print "-" }')
    results+=("$group|$label|$conns|$per_s|$p50|$p99|$errors|$cpu_per_unit|$rss|$hwm")
}

# With YAAD_B, each yaad config once more with the second binary ("B" before its label).
with_b() {
    local label kind flags
    while IFS='|' read -r label kind flags; do
        printf '%s|%s|%s|A\n' "$label" "$kind" "$flags"
        if [[ -n ${YAAD_B:-} && $kind == yaad-* ]]; then
            printf 'B %s|%s|%s|B\n' "$label" "$kind" "$flags"
        fi
    done
}

# Rounds interleave the servers (A B C, A B C, ...) so that a burst of other load on the
# machine hits every server alike; the table shows medians over the rounds.
for ((round = 1; round <= REPEAT; round++)); do
    for group in "${GROUPS_TO_RUN[@]}"; do
        while IFS='|' read -r label kind flags arm; do
            if [[ $kind == yaad-* && ! -x $YAAD ]]; then
                ((round > 1)) || echo "skipping $label: no $YAAD" >&2
                continue
            fi
            for conns in $CONNS; do
                echo "round $round/$REPEAT: $WORKLOAD on $label, $conns conns, ${DURATION}s" >&2
                if [[ $arm == B ]]; then
                    YAAD=$YAAD_B YAAD_ARGS=${YAAD_B_ARGS-$YAAD_ARGS} \
                        run_one "$group" "$label" "$kind" "$flags" "$conns"
                else
                    run_one "$group" "$label" "$kind" "$flags" "$conns"
                fi
            done
        done < <(configs "$group" | with_b)
    done
done

{
    echo "yaad-bench $WORKLOAD over $SOCKET, ${DURATION}s per run, median of $REPEAT, pipeline $PIPELINE, body $BODY B $BENCH_ARGS$([[ ${RT:-0} == 1 ]] && echo ", real-time (RT=1)")"
    echo "host: $(nproc) CPUs, $(uname -r), load average at the end $(cut -d' ' -f1-3 /proc/loadavg); $("$BEANSTALKD" -v 2>&1 | head -n 1)"
    printf '%s\n' "${results[@]}" | awk -F'|' '
        function median(name, key, n,    i, j, t, a) {
            for (i = 1; i <= n; i++) a[i] = vals[name, key, i]
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function extreme(name, key, n, want_max,    i, m) {
            m = vals[name, key, 1]
            for (i = 2; i <= n; i++)
                if (want_max ? vals[name, key, i] + 0 > m + 0 : vals[name, key, i] + 0 < m + 0) m = vals[name, key, i]
            return m
        }
        {
            key = $1 "|" $2 "|" $3
            if (!(key in count)) order[++keys] = key
            n = ++count[key]
            vals["per_s", key, n] = $4; vals["p50", key, n] = $5; vals["p99", key, n] = $6
            vals["cpu", key, n] = $8; vals["rss", key, n] = $9; vals["hwm", key, n] = $10
            errors[key] += $7
        }
        END {
            printf "%-6s %-20s %5s %10s %16s %8s %8s %6s %10s %9s %9s %6s %6s\n", "group", "server", "conns", \
                "units/s", "(min-max)", "p50 µs", "p99 µs", "errors", "srv µs/u", "RSS KiB", "peak KiB", "ratio", "÷f50"
            for (k = 1; k <= keys; k++) {
                key = order[k]; split(key, f, "|"); n = count[key]
                per_s[key] = median("per_s", key, n)
                if (f[2] ~ /^beanstalkd/) base[f[1] "|" f[3]] = per_s[key]
            }
            for (k = 1; k <= keys; k++) {
                key = order[k]; split(key, f, "|")
                f50 = key; sub(/-f0\|/, "-f50|", f50)
                share[key] = (f50 != key && per_s[f50] > 0) ? sprintf("%.2f", per_s[key] / per_s[f50]) : ""
            }
            for (k = 1; k <= keys; k++) {
                key = order[k]; split(key, f, "|"); n = count[key]
                b = base[f[1] "|" f[3]]
                ratio = b > 0 ? sprintf("%.2f", per_s[key] / b) : "-"
                cpu = vals["cpu", key, 1] == "-" ? "-" : sprintf("%.1f", median("cpu", key, n))
                printf "%-6s %-20s %5s %10.0f %16s %8.0f %8.0f %6d %10s %9s %9s %6s %6s\n", f[1], f[2], f[3], \
                    per_s[key], sprintf("(%.0f-%.0f)", extreme("per_s", key, n, 0), extreme("per_s", key, n, 1)), \
                    median("p50", key, n), median("p99", key, n), errors[key], cpu, \
                    extreme("rss", key, n, 1), extreme("hwm", key, n, 1), ratio, share[key]
            }
        }'
    echo "ratio = median units/s ÷ the beanstalkd row of the same group and conns; ÷f50 = a -f 0"
    echo "row's median ÷ the median of the -f 50 row of the same binary, mode and conns."
    echo "targets: mem ≥ 1.5×, mapped default flush ≥ 1.2×, -f 0 ≥ 5× (7× at 50 conns) and ÷f50 ≥ 0.65 (0.85 at 50 conns)"
} | tee "$OUT/table.txt"
echo "raw results: $OUT/runs.jsonl" >&2
