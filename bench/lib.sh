# Shared helpers of the bench/ scripts: start and stop a server, read its memory and CPU.
# Sourced, not run. Needs bash, jq and awk.

BEANSTALKD=${BEANSTALKD:-/usr/bin/beanstalkd}
YAAD=${YAAD:-target/release/yaad}
# Extra flags for every yaad server (e.g. YAAD_ARGS="--threads 2").
YAAD_ARGS=${YAAD_ARGS:-}
BENCH=${BENCH:-target/release/yaad-bench}
# The canned-reply server (bench/null_server.rs): the machine's ceiling for a workload.
NULL_SERVER=${NULL_SERVER:-target/release/examples/null-server}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-11390}
# SOCKET=unix: servers listen on a Unix-domain socket beside their data directory instead of
# HOST:PORT (both beanstalkd 1.12 and yaad accept `-l unix:PATH`).
SOCKET=${SOCKET:-tcp}
# The address yaad-bench is given for the running server (set by start_server).
ADDR=

SERVER_PID=
SERVER_DIR=
# Words put before the server's command line (e.g. taskset -c 0); it must exec the server.
SERVER_WRAP=()

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
    done
}

# Builds the release binaries unless NO_BUILD=1.
build() {
    if [[ ${NO_BUILD:-0} != 1 ]]; then
        cargo build --release --bins >&2
        if [[ ${NULL:-0} == 1 ]]; then cargo build --release --example null-server >&2; fi
    fi
    [[ -x $BENCH ]] || die "no $BENCH (build with: cargo build --release --bins)"
}

# Is something accepting connections on HOST:PORT?
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

# Is the running server listening?
listening() {
    if [[ $SOCKET == unix ]]; then
        [[ -S ${ADDR#unix:} ]]
    else
        port_open
    fi
}

# start_server KIND [FLAGS...]: KIND is beanstalkd, yaad-mem, yaad-mapped, yaad-lazy or null. A fresh
# data directory is made for the disk kinds when FLAGS contain the word DIR (replaced by it) or
# the kind is yaad-*. Sets SERVER_PID and SERVER_DIR and waits (up to 60 s) for the port.
# KEEP_DIR=path reuses an existing directory instead (for restarts).
start_server() {
    local kind=$1
    shift
    if [[ -n ${KEEP_DIR:-} ]]; then
        SERVER_DIR=$KEEP_DIR
    else
        SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/yaad-bench.XXXXXX")
    fi
    local listen=()
    if [[ $SOCKET == unix ]]; then
        ADDR=unix:$SERVER_DIR.sock
        rm -f "$SERVER_DIR.sock"
        listen=(-l "$ADDR")
    else
        port_open && die "port $PORT is already in use (set PORT=...)"
        ADDR=$HOST:$PORT
        listen=(-l "$HOST" -p "$PORT")
    fi
    local args=()
    for a in "$@"; do
        if [[ $a == DIR ]]; then args+=("$SERVER_DIR"); else args+=("$a"); fi
    done
    case $kind in
        beanstalkd)
            [[ -x $BEANSTALKD ]] || die "no $BEANSTALKD (apt-get install beanstalkd)"
            "${SERVER_WRAP[@]}" "$BEANSTALKD" "${listen[@]}" "${args[@]}" >"$SERVER_DIR.log" 2>&1 &
            ;;
        yaad-mem | yaad-mapped | yaad-lazy)
            [[ -x $YAAD ]] || die "no $YAAD yet (cargo build --release --bin yaad)"
            # shellcheck disable=SC2086 # YAAD_ARGS are words
            "${SERVER_WRAP[@]}" "$YAAD" --mode "${kind#yaad-}" "${listen[@]}" -b "$SERVER_DIR" "${args[@]}" \
                ${YAAD_ARGS:-} >"$SERVER_DIR.log" 2>&1 &
            ;;
        null)
            [[ -x $NULL_SERVER ]] || die "no $NULL_SERVER (cargo build --release --example null-server)"
            [[ $SOCKET == tcp ]] || die "the null server listens on TCP only"
            "${SERVER_WRAP[@]}" "$NULL_SERVER" "$ADDR" >"$SERVER_DIR.log" 2>&1 &
            ;;
        *) die "unknown server kind $kind" ;;
    esac
    SERVER_PID=$!
    local started=$SECONDS
    until listening; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$SERVER_DIR.log" >&2
            die "$kind exited at start"
        fi
        ((SECONDS - started < 60)) || die "$kind does not accept connections after 60 s"
        sleep 0.02
    done
}

# Stops the server (SIGTERM, then SIGKILL after 30 s) and removes its directory unless
# KEEP_DIR is set or the first argument is "keep".
# Starts server KIND as memory.sh and timing.sh name them (beanstalkd, beanstalkd-b for
# beanstalkd -b DIR, yaad-mem, yaad-mapped, yaad-lazy) with extra flags, and stops it when the
# script exits. Sets kind and flags: `KEEP_DIR=... start_server "$kind" $flags` restarts it.
start_kind() {
    kind=$1
    shift
    flags="$*"
    if [[ $kind == beanstalkd-b ]]; then
        kind=beanstalkd
        flags="-b DIR $flags"
    fi
    trap 'stop_server' EXIT
    # shellcheck disable=SC2086
    start_server "$kind" $flags
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill "-${STOP_SIGNAL:-TERM}" "$SERVER_PID" 2>/dev/null || true
    local waited=0
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        if ((waited >= 1500)); then
            kill -KILL "$SERVER_PID" 2>/dev/null || true
            break
        fi
        sleep 0.02
        waited=$((waited + 1))
    done
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    rm -f "$SERVER_DIR.sock"
    if [[ ${1:-} != keep && -z ${KEEP_DIR:-} && -n $SERVER_DIR ]]; then
        rm -rf "$SERVER_DIR" "$SERVER_DIR.log"
    fi
}

# STOP_SIGNAL=KILL stop_server keep: as after a crash (no flush, no clean summary).

# status_kib FIELD: a /proc/PID/status figure of the server in KiB (VmRSS, VmHWM); "-" when
# the server is gone.
status_kib() {
    awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo -
}

# CPU seconds (user + system) the server has used so far; "-" when it is gone.
server_cpu_s() {
    # Fields after the parenthesised command name: utime is the 12th, stime the 13th.
    awk '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / 100 }' "/proc/$SERVER_PID/stat" \
        2>/dev/null || echo -
}

# Disk use of the server's data directory in KiB.
dir_kib() {
    du -sk "$SERVER_DIR" | awk '{ print $1 }'
}

# server_stat KEY: a figure from the server's global `stats` (empty when absent).
server_stat() {
    server_stats | awk -v k="$1:" '$1 == k { print $2 }'
}

# The server's whole `stats` reply, one "key: value" a line.
server_stats() {
    if [[ $SOCKET == unix ]]; then
        timeout 10 python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"stats\r\nquit\r\n")
while chunk := s.recv(65536):
    sys.stdout.buffer.write(chunk)' "${ADDR#unix:}"
    else
        timeout 10 bash -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "stats\r\nquit\r\n" >&3
            cat <&3' _ "$HOST" "$PORT"
    fi | tr -d '\r'
}

# Milliseconds of CPU time the host (hypervisor) has taken from this machine's CPUs so far:
# the steal column of /proc/stat, in ticks of 10 ms. A run during which it grew by more than
# a few hundred ms measured the host as much as the server.
host_steal_ms() {
    awk '$1 == "cpu" { print $9 * 10 }' /proc/stat
}

# Seconds since the epoch with fractions.
now_s() {
    date +%s.%N
}

# Is the server process still running (not exited, not a zombie waiting to be reaped)?
server_alive() {
    local state
    state=$(awk '$1 == "State:" { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# The server's exit status once it has exited on its own (after server_alive said no); the
# server is reaped, so stop_server afterwards only removes its directory.
server_exit_status() {
    local rc=0
    wait "$SERVER_PID" 2>/dev/null || rc=$?
    echo "$rc"
}

# Memory mappings of the server (lines of /proc/PID/maps); "-" when it is gone.
server_maps() {
    if [[ -r /proc/$SERVER_PID/maps ]]; then wc -l <"/proc/$SERVER_PID/maps"; else echo -; fi
}

# Regular files in the server's data directory (any depth).
dir_files() {
    { find "$SERVER_DIR" -type f 2>/dev/null || true; } | wc -l
}

# Apparent size of the data directory in KiB (file lengths; dir_kib counts allocated blocks).
dir_apparent_kib() {
    { du -sk --apparent-size "$SERVER_DIR" 2>/dev/null || true; } | awk '{ print $1 }'
}

# server_config NAME: "label|kind|flags" (for start_server; DIR is the fresh data directory) of
# a server named as memory.sh names them: beanstalkd-b, beanstalkd, yaad-mapped, yaad-lazy,
# yaad-mem; null is the canned-reply server (bench/null_server.rs: no stats, keeps nothing).
server_config() {
    case $1 in
        null) echo "null server|null|" ;;
        beanstalkd-b) echo "beanstalkd -b|beanstalkd|-b DIR" ;;
        beanstalkd) echo "beanstalkd|beanstalkd|" ;;
        yaad-mapped | yaad-lazy | yaad-mem) echo "yaad ${1#yaad-}|$1|" ;;
        *) die "unknown server $1 (beanstalkd-b, beanstalkd, yaad-mapped, yaad-lazy, yaad-mem, null)" ;;
    esac
}

# health: "ok" when the server runs and answers `stats` within 10 s, "crashed (exit N)" when it
# has exited (it is reaped), "wedged" when it runs but does not answer.
health() {
    if ! server_alive; then
        echo "crashed (exit $(server_exit_status))"
    elif [[ -z $(server_stat pid) ]]; then
        echo wedged
    else
        echo ok
    fi
}
