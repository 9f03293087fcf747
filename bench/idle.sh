#!/usr/bin/env bash
# Memory per idle connection: opens N connections to a fresh server, has each one run one
# command (`list-tube-used`, so that it has read and written once), leaves them all idle and
# prints the server's resident memory per connection, for beanstalkd and each yaad mode side
# by side.
#
# Usage: bench/idle.sh [N]               (run from anywhere; it works in the repository root)
#   N: idle connections [10000]
# Environment: KINDS servers ["beanstalkd yaad-mem yaad-mapped yaad-lazy"]
#   NO_BUILD=1 skip `cargo build --release --bins`   YAAD [target/release/yaad]   PORT [11390]
# The soft open-file limit is raised to the hard one (`ulimit -Hn`), which must leave room for
# N connections (and for yaad's second handle of each socket, if it has one).
# Per connection: (VmRSS with N idle connections - VmRSS before) / N, in bytes. The client is a
# python3 process holding every socket (its memory is not counted).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need awk python3

N=${1:-10000}
KINDS=${KINDS:-beanstalkd yaad-mem yaad-mapped yaad-lazy}

build
ulimit -Sn "$(ulimit -Hn)"
(($(ulimit -n) >= N + 200)) || die "the open-file limit ($(ulimit -n)) is below N + 200"
trap 'stop_server' EXIT

# idle_rss: prints "rss_before_kib rss_idle_kib" of the running server with N idle connections.
idle_rss() {
    python3 - "$SERVER_PID" "$HOST" "$PORT" "$N" <<'EOF'
import socket, sys, time

pid, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

def settle():
    # Lets the server finish its work (accepts, replies) before the figure is read.
    time.sleep(1.0)

settle()
before = rss_kib()
conns = []
for _ in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"list-tube-used\r\n")
    conns.append(s)
for s in conns:
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = s.recv(64)
        if not chunk:
            sys.exit("a connection was closed by the server (connection limit?)")
        reply += chunk
    if not reply.startswith(b"USING "):
        sys.exit(f"unexpected reply {reply!r}")
settle()
print(before, rss_kib())
for s in conns:
    s.close()
EOF
}

printf '%-12s %12s %12s %16s\n' server "RSS before" "RSS idle" "bytes per conn"
for kind in $KINDS; do
    case $kind in
        beanstalkd) start_server beanstalkd ;;
        yaad-*) start_server "$kind" -c $((N + 100)) ;;
        *) die "unknown server kind $kind" ;;
    esac
    read -r before idle < <(idle_rss)
    stop_server
    awk -v k="$kind" -v b="$before" -v i="$idle" -v n="$N" 'BEGIN {
        printf "%-12s %9d KiB %9d KiB %16.0f\n", k, b, i, (i - b) * 1024 / n }'
done
