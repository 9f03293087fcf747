#!/usr/bin/env bash
# Side-by-side comparison of beanstalkd 1.12 and yaad on loopback with identical yaad-bench
# workloads; prints a table of figures and ratios (yaad ÷ beanstalkd) and the servers' memory.
#
# Usage: bench/compare.sh [GROUP...]     (run from anywhere; it works in the repository root)
#   GROUP: mem    beanstalkd (in memory)       vs yaad --mode mem
#          disk   beanstalkd -b DIR (-f 50)    vs yaad --mode mapped / lazy -b DIR (default flush)
#          fsync  beanstalkd -b DIR -f 0       vs yaad --mode mapped / lazy -b DIR -f 0
#          (default: all three)
# Environment (defaults in brackets):
#   DURATION  seconds per run [10]         CONNS     connection counts ["10 50"]
#   WORKLOAD  yaad-bench mode [cycle]      PIPELINE  commands in flight per connection [1]
#   BODY      body bytes [100]             WARMUP    seconds of unmeasured load first [1]
#   BENCH_ARGS extra yaad-bench flags []   PIN=1     server on CPU 0, yaad-bench on CPU 1
#   SOCKET    tcp (loopback HOST:PORT) or unix (a Unix-domain socket, less kernel work) [tcp]
#   BEANSTALKD [/usr/bin/beanstalkd]  YAAD [target/release/yaad]  PORT [11390]
#   NO_BUILD=1 skip `cargo build --release --bins`     OUT  results dir [target/bench/compare-TIME]
# Every run starts a fresh server with an empty data directory. Raw yaad-bench JSON lines go to
# OUT/runs.jsonl and the table to OUT/table.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need jq awk

DURATION=${DURATION:-10}
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

# The servers of each group: "label|kind|flags" (DIR stands for a fresh data directory).
configs() {
    case $1 in
        mem) printf '%s\n' "beanstalkd|beanstalkd|" "yaad mem|yaad-mem|" ;;
        disk) printf '%s\n' "beanstalkd -b|beanstalkd|-b DIR" "yaad mapped|yaad-mapped|" \
            "yaad lazy|yaad-lazy|" ;;
        fsync) printf '%s\n' "beanstalkd -b -f0|beanstalkd|-b DIR -f 0" \
            "yaad mapped -f0|yaad-mapped|-f 0" "yaad lazy -f0|yaad-lazy|-f 0" ;;
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
    local rss hwm
    rss=$(status_kib VmRSS)
    hwm=$(status_kib VmHWM)
    stop_server
    echo "$json" | jq -c --arg g "$group" --arg l "$label" '. + {group: $g, server: $l}' \
        >>"$OUT/runs.jsonl"
    local units per_s p50 p99 errors
    read -r units per_s p50 p99 errors < <(echo "$json" |
        jq -r '[.units // 0, .per_s // 0, .latency_us.unit.p50 // 0, .latency_us.unit.p99 // 0,
                .errors // 1] | @tsv')
    local cpu_per_unit
    cpu_per_unit=$(awk -v a="$cpu_before" -v b="$cpu_after" -v u="$units" \
        'BEGIN { if (u > 0) printf "%.1f", (b - a) * 1e6 / u; else print "-" }')
    results+=("$group|$label|$conns|$per_s|$p50|$p99|$errors|$cpu_per_unit|$rss|$hwm")
}

for group in "${GROUPS_TO_RUN[@]}"; do
    while IFS='|' read -r label kind flags; do
        if [[ $kind == yaad-* && ! -x $YAAD ]]; then
            echo "skipping $label: no $YAAD" >&2
            continue
        fi
        for conns in $CONNS; do
            echo "running $WORKLOAD: $label, $conns conns, ${DURATION}s" >&2
            run_one "$group" "$label" "$kind" "$flags" "$conns"
        done
    done < <(configs "$group")
done

{
    echo "yaad-bench $WORKLOAD over $SOCKET, ${DURATION}s per run, pipeline $PIPELINE, body $BODY B $BENCH_ARGS"
    echo "host: $(nproc) CPUs, $(uname -r); beanstalkd: $("$BEANSTALKD" -v 2>&1 | head -n 1)"
    printf '%-6s %-18s %5s %10s %8s %8s %6s %12s %10s %10s %7s\n' \
        group server conns "units/s" "p50 µs" "p99 µs" errors "srv cpu µs/u" "RSS KiB" \
        "peak KiB" "ratio"
    for line in "${results[@]}"; do
        IFS='|' read -r group label conns per_s p50 p99 errors cpu rss hwm <<<"$line"
        # The ratio compares with the beanstalkd row of the same group and connection count.
        base=
        for other in "${results[@]}"; do
            IFS='|' read -r og ol oc ops _ <<<"$other"
            if [[ $og == "$group" && $oc == "$conns" && $ol == beanstalkd* ]]; then base=$ops; fi
        done
        ratio=$(awk -v a="$per_s" -v b="${base:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
        printf '%-6s %-18s %5s %10.0f %8s %8s %6s %12s %10s %10s %7s\n' \
            "$group" "$label" "$conns" "$per_s" "$p50" "$p99" "$errors" "$cpu" "$rss" "$hwm" \
            "$ratio"
    done
    echo "targets (issue 6): mem ≥ 1.5×, mapped default flush ≥ 1.2×, -f 0 ≥ 5× (ratio column)"
} | tee "$OUT/table.txt"
echo "raw results: $OUT/runs.jsonl" >&2
